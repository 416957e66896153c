//! A fast mock OpenAI-compatible upstream for the load benchmark (`benches/load.sh`).
//!
//! `cargo run --release --example mock_upstream -- 127.0.0.1:PORT`
//!
//! Answers every request (any method, any path) on HTTP/1.1 keep-alive connections after
//! draining the request body:
//! - by default with a fixed ~300-byte chat completion JSON (with Content-Length);
//! - with request header `x-mock: sse`, with a short SSE stream: 5 events 10 ms apart
//!   (4 `chat.completion.chunk` events, then `data: [DONE]`), chunked.
//!
//! Worker threads: one per CPU the process may run on (so `taskset -c N` gives one).

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, Infallible>;

/// The fixed non-streamed reply (about 300 bytes).
const COMPLETION: &str = concat!(
    r#"{"id":"chatcmpl-bench0000000000000000000000","object":"chat.completion","#,
    r#""created":1700000000,"model":"gpt-4.1-mini","choices":[{"index":0,"#,
    r#""message":{"role":"assistant","content":"Your card should arrive within 5 to 7 "#,
    r#"business days."},"finish_reason":"stop"}],"#,
    r#""usage":{"prompt_tokens":42,"completion_tokens":12,"total_tokens":54}}"#
);

const SSE_PIECES: [&str; 4] = ["Your card ", "should arrive ", "within 5 to 7 ", "days."];
const SSE_GAP: Duration = Duration::from_millis(10);

fn sse_event(content: &str) -> Bytes {
    Bytes::from(format!(
        "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\
         \"created\":1700000000,\"model\":\"gpt-4.1-mini\",\"choices\":[{{\"index\":0,\
         \"delta\":{{\"content\":\"{content}\"}},\"finish_reason\":null}}]}}\n\n"
    ))
}

async fn handle(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let sse = req
        .headers()
        .get("x-mock")
        .is_some_and(|v| v.as_bytes() == b"sse");
    // Drain the request body without keeping it.
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            break;
        }
    }
    if !sse {
        return Ok(Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(COMPLETION.as_bytes())).boxed())
            .unwrap());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(8);
    tokio::spawn(async move {
        for (i, piece) in SSE_PIECES.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(SSE_GAP).await;
            }
            if tx.send(Ok(Frame::data(sse_event(piece)))).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(SSE_GAP).await;
        let _ = tx
            .send(Ok(Frame::data(Bytes::from_static(b"data: [DONE]\n\n"))))
            .await;
    });
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    Ok(Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap())
}

#[tokio::main]
async fn main() {
    let listen: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into())
        .parse()
        .expect("usage: mock_upstream IP:PORT");
    let listener = TcpListener::bind(listen).await.expect("bind");
    println!(
        "mock_upstream listening on {}",
        listener.local_addr().unwrap()
    );
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service_fn(handle))
                .await;
        });
    }
}
