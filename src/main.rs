//! `gepa-gateway -c FILE [-t] [-d] [-u]`: see the README.

use pingora_core::server::configuration::Opt;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let code = gepa_gateway::server::run(Opt::parse_args());
    std::process::exit(code);
}
