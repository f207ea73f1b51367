//! `instant-endpoint`: an OpenAI-compatible chat-completions server on 127.0.0.1 that answers
//! every request at once (see `demorecon_testkit::instant`), for pipeline throughput
//! benchmarks. It prints `listening on http://127.0.0.1:PORT/v1` as its first line of stdout,
//! serves until SIGTERM or Ctrl-C, then prints `requests: N` and exits. `--measure SECS` instead
//! measures its own ceiling: keep-alive clients in the same process send a schema request
//! (about 1.5 KB, like a pipeline's) for that long, and it prints the requests per second.

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use demorecon_testkit::instant::{InstantState, router};

/// An instant-reply OpenAI-compatible endpoint on loopback, for benchmarks.
#[derive(Debug, Parser)]
#[command(name = "instant-endpoint", version)]
struct Args {
    /// Port on 127.0.0.1; 0 picks a free one (printed on the first line).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Preferred length of arrays in schema-synthesised answers (bounded by minItems/maxItems).
    #[arg(long, default_value_t = 4)]
    array_items: usize,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Measure: serve, load it from this process for SECS seconds, print requests/s, exit.
    #[arg(long, value_name = "SECS")]
    measure: Option<f64>,
    /// Keep-alive connections for --measure.
    #[arg(long, default_value_t = 64)]
    connections: usize,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    rt.build()?.block_on(serve(args))
}

async fn serve(args: Args) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
    let addr = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{addr}/v1")?;
        out.flush()?;
    }
    let state = InstantState::new(args.array_items);
    let app = router(state.clone());
    if let Some(secs) = args.measure {
        tokio::spawn(axum::serve(listener, app).into_future());
        let sent = measure(addr, args.connections, Duration::from_secs_f64(secs)).await?;
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "measured: {sent} requests over {} connections in {secs} s = {:.0} requests/s (server counted {})",
            args.connections,
            sent as f64 / secs,
            state.requests()
        )?;
        return out.flush();
    }
    tokio::select! {
        served = axum::serve(listener, app) => served?,
        () = stop_signal() => {}
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "requests: {}", state.requests())?;
    out.flush()
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs `connections` keep-alive HTTP/1.1 clients against `addr` for `span`; returns the number
/// of complete responses.
async fn measure(addr: SocketAddr, connections: usize, span: Duration) -> std::io::Result<u64> {
    let prompt = "Decompose this instruction into facts and sub-instructions. ".repeat(20);
    let body = serde_json::json!({
        "model": "bench",
        "messages": [{"role": "system", "content": "You are a careful annotator."},
                     {"role": "user", "content": prompt}],
        "temperature": 0.0,
        "response_format": {"type": "json_schema", "json_schema": {"name": "decomposition", "strict": true,
            "schema": {"type": "object", "additionalProperties": false, "required": ["facts", "sub_instructions"],
                "properties": {"facts": {"type": "array", "items": {"type": "string"}},
                               "sub_instructions": {"type": "array", "items": {"type": "string"}, "minItems": 2}}}}}
    })
    .to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let request: std::sync::Arc<[u8]> = request.into_bytes().into();
    let deadline = Instant::now() + span;
    let clients: Vec<_> = (0..connections.max(1))
        .map(|_| tokio::spawn(client(addr, request.clone(), deadline)))
        .collect();
    let mut total = 0;
    for c in clients {
        total += c.await.map_err(std::io::Error::other)??;
    }
    Ok(total)
}

async fn client(
    addr: SocketAddr,
    request: std::sync::Arc<[u8]>,
    deadline: Instant,
) -> std::io::Result<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let mut done = 0;
    while Instant::now() < deadline {
        stream.write_all(&request).await?;
        buf.clear();
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::Error::other("server closed the connection"));
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .ok_or_else(|| std::io::Error::other("response without content-length"))?;
                if buf.len() >= end + 4 + length {
                    break;
                }
            }
        }
        done += 1;
    }
    Ok(done)
}
