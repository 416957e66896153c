//! A small fixed-rate (open-loop) HTTP/1.1 load generator for `benches/load.sh`, for the
//! latency runs that wrk cannot do (wrk is closed-loop; wrk2 is not packaged in Debian).
//!
//! `loadgen --url http://127.0.0.1:PORT/path --body FILE --rate 1000 --connections 16
//!          --duration 8 --warmup 1 [--header 'x-mock: sse'] [--label NAME]`
//!
//! Requests are scheduled at fixed intervals (`1/rate`) from the start, and spread over
//! `connections` keep-alive connections (hyper's HTTP/1.1 client, one request in flight per
//! connection). A connection takes the next scheduled request when it is free.
//!
//! Latency is measured like wrk2 does, with coordinated-omission correction: when every
//! connection was busy at a request's scheduled time, the request is late because the
//! server was slow, and its latency counts from the scheduled time. When a connection was
//! free and waiting, the latency counts from the moment it actually sent, so the client's
//! own 1 ms timer granularity is not charged to the server. `--rate 0` is closed-loop
//! (every connection sends back to back).
//!
//! Reported: total latency (last body byte), time to response header and to the first body
//! byte (TTFB, for SSE), percentiles from all samples (sorted, exact), achieved rate,
//! non-2xx responses and errors. The last line is machine-readable (`LOADGEN k=v ...`).
//! Runs on a single-threaded runtime: pin it with `taskset`.

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

#[derive(Parser, Debug)]
struct Args {
    /// http://IP:PORT/path (plain HTTP only)
    #[arg(long)]
    url: String,
    /// File whose bytes are the POST body (JSON)
    #[arg(long)]
    body: std::path::PathBuf,
    /// Requests per second; 0 = closed loop
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Measured seconds (after the warm-up)
    #[arg(long, default_value_t = 8.0)]
    duration: f64,
    /// Seconds of load before measuring (same rate; samples discarded)
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Extra request header, `name: value` (repeatable)
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Per-request timeout in seconds
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    #[arg(long, default_value = "run")]
    label: String,
}

#[derive(Default)]
struct Stats {
    total_us: Vec<u64>,
    header_us: Vec<u64>,
    first_byte_us: Vec<u64>,
    /// Gaps between successive non-empty body frames of one response (SSE: the delay
    /// between events as the client sees them).
    gap_us: Vec<u64>,
    ok: u64,
    non_2xx: u64,
    errors: u64,
    timeouts: u64,
    /// Largest delay between a request's scheduled time and its actual send.
    max_lag_us: u64,
    /// Completion time of the last measured request.
    last_done: Option<Instant>,
}

struct Target {
    authority: String,
    path: String,
    body: Bytes,
    headers: Vec<(String, String)>,
}

fn parse_target(args: &Args) -> Target {
    let uri: http::Uri = args.url.parse().expect("--url is a URL");
    assert_eq!(uri.scheme_str(), Some("http"), "only http:// URLs");
    let authority = uri.authority().expect("--url has host:port").to_string();
    let path = uri
        .path_and_query()
        .map_or("/".to_string(), |p| p.to_string());
    let body = Bytes::from(std::fs::read(&args.body).expect("--body file is readable"));
    let headers = args
        .headers
        .iter()
        .map(|h| {
            let (n, v) = h.split_once(':').expect("--header is 'name: value'");
            (n.trim().to_string(), v.trim().to_string())
        })
        .collect();
    Target {
        authority,
        path,
        body,
        headers,
    }
}

type Sender = http1::SendRequest<Full<Bytes>>;

async fn connect(authority: &str) -> std::io::Result<Sender> {
    let stream = TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

struct Timing {
    header: Duration,
    first_byte: Option<Duration>,
    gaps: Vec<Duration>,
    total: Duration,
    status: u16,
}

async fn one_request(sender: &mut Sender, t: &Target, start: Instant) -> Result<Timing, String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    let mut req = Request::post(t.path.as_str())
        .header("host", t.authority.as_str())
        .header("content-type", "application/json")
        .header("content-length", t.body.len());
    for (n, v) in &t.headers {
        req = req.header(n.as_str(), v.as_str());
    }
    let req = req
        .body(Full::new(t.body.clone()))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let header = start.elapsed();
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut first_byte = None;
    let mut last_data: Option<Instant> = None;
    let mut gaps = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if frame.data_ref().is_some_and(|d| !d.is_empty()) {
            let now = Instant::now();
            if first_byte.is_none() {
                first_byte = Some(now.duration_since(start));
            }
            if let Some(prev) = last_data.replace(now) {
                gaps.push(now.duration_since(prev));
            }
        }
    }
    Ok(Timing {
        header,
        first_byte,
        gaps,
        total: start.elapsed(),
        status,
    })
}

struct Schedule {
    origin: Instant,
    interval: Option<Duration>,
    measure_from: Instant,
    end: Instant,
    next: std::cell::Cell<u64>,
}

impl Schedule {
    /// The next request's scheduled time, or None when the run is over.
    fn take(&self) -> Option<Instant> {
        let now = Instant::now();
        let at = match self.interval {
            Some(iv) => {
                let i = self.next.get();
                self.next.set(i + 1);
                self.origin + iv.mul_f64(i as f64)
            }
            None => now,
        };
        (at < self.end).then_some(at)
    }
}

async fn worker(target: Rc<Target>, sched: Rc<Schedule>, stats: Rc<RefCell<Stats>>, to: Duration) {
    let mut sender: Option<Sender> = None;
    while let Some(at) = sched.take() {
        let now = Instant::now();
        let start = if at > now {
            tokio::time::sleep_until(at.into()).await;
            Instant::now()
        } else {
            at
        };
        let measured = at >= sched.measure_from;
        if sender.is_none() {
            match connect(&target.authority).await {
                Ok(s) => sender = Some(s),
                Err(_) => {
                    if measured {
                        stats.borrow_mut().errors += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let lag = Instant::now().saturating_duration_since(at);
        let s = sender.as_mut().unwrap();
        let res = tokio::time::timeout(to, one_request(s, &target, start)).await;
        if !measured {
            if !matches!(res, Ok(Ok(_))) {
                sender = None;
            }
            continue;
        }
        let mut st = stats.borrow_mut();
        st.max_lag_us = st.max_lag_us.max(lag.as_micros() as u64);
        match res {
            Ok(Ok(t)) => {
                st.last_done = Some(Instant::now());
                if (200..300).contains(&t.status) {
                    st.ok += 1;
                    st.total_us.push(t.total.as_micros() as u64);
                    st.header_us.push(t.header.as_micros() as u64);
                    if let Some(fb) = t.first_byte {
                        st.first_byte_us.push(fb.as_micros() as u64);
                    }
                    st.gap_us
                        .extend(t.gaps.iter().map(|g| g.as_micros() as u64));
                } else {
                    st.non_2xx += 1;
                }
            }
            Ok(Err(_)) => {
                st.errors += 1;
                sender = None;
            }
            Err(_) => {
                st.timeouts += 1;
                sender = None;
            }
        }
    }
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

fn main() {
    let args = Args::parse();
    let target = Rc::new(parse_target(&args));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    let stats = Rc::new(RefCell::new(Stats::default()));
    let origin = Instant::now() + Duration::from_millis(50);
    let measure_from = origin + Duration::from_secs_f64(args.warmup);
    let sched = Rc::new(Schedule {
        origin,
        interval: (args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate)),
        measure_from,
        end: measure_from + Duration::from_secs_f64(args.duration),
        next: std::cell::Cell::new(0),
    });
    let timeout = Duration::from_secs_f64(args.timeout);
    local.block_on(&rt, async {
        let mut tasks = Vec::new();
        for _ in 0..args.connections {
            tasks.push(tokio::task::spawn_local(worker(
                target.clone(),
                sched.clone(),
                stats.clone(),
                timeout,
            )));
        }
        for t in tasks {
            let _ = t.await;
        }
    });

    let mut st = stats.borrow_mut();
    let measured_end = st.last_done.unwrap_or(sched.end).max(sched.end);
    let secs = measured_end.duration_since(measure_from).as_secs_f64();
    let done = st.ok + st.non_2xx;
    let achieved = done as f64 / secs;
    st.total_us.sort_unstable();
    st.header_us.sort_unstable();
    st.first_byte_us.sort_unstable();
    st.gap_us.sort_unstable();
    let rate = if args.rate > 0.0 {
        format!("{}", args.rate)
    } else {
        "closed-loop".into()
    };
    println!(
        "{}: rate {rate}, {} conns, {:.1}s: {done} responses ({achieved:.0}/s), {} non-2xx, \
         {} errors, {} timeouts, max schedule lag {:.1} ms",
        args.label,
        args.connections,
        secs,
        st.non_2xx,
        st.errors,
        st.timeouts,
        st.max_lag_us as f64 / 1000.0
    );
    println!(
        "  latency ms  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        pct(&st.total_us, 50.0),
        pct(&st.total_us, 90.0),
        pct(&st.total_us, 99.0),
        pct(&st.total_us, 99.9),
        pct(&st.total_us, 100.0)
    );
    println!(
        "  header ms   p50 {:.3}  p99 {:.3};  first body byte ms  p50 {:.3}  p99 {:.3}",
        pct(&st.header_us, 50.0),
        pct(&st.header_us, 99.0),
        pct(&st.first_byte_us, 50.0),
        pct(&st.first_byte_us, 99.0)
    );
    if !st.gap_us.is_empty() {
        println!(
            "  between body frames ms  p50 {:.3}  p99 {:.3}  max {:.3}",
            pct(&st.gap_us, 50.0),
            pct(&st.gap_us, 99.0),
            pct(&st.gap_us, 100.0)
        );
    }
    println!(
        "LOADGEN label={} responses={done} achieved_rps={achieved:.1} non2xx={} errors={} \
         timeouts={} p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} p999_ms={:.3} max_ms={:.3} \
         ttfb_p50_ms={:.3} ttfb_p99_ms={:.3} gap_p50_ms={:.3} gap_p99_ms={:.3} max_lag_ms={:.3}",
        args.label,
        st.non_2xx,
        st.errors,
        st.timeouts,
        pct(&st.total_us, 50.0),
        pct(&st.total_us, 90.0),
        pct(&st.total_us, 99.0),
        pct(&st.total_us, 99.9),
        pct(&st.total_us, 100.0),
        pct(&st.first_byte_us, 50.0),
        pct(&st.first_byte_us, 99.0),
        pct(&st.gap_us, 50.0),
        pct(&st.gap_us, 99.0),
        st.max_lag_us as f64 / 1000.0
    );
}
