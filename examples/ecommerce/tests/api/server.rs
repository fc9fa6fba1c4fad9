//! The server's limits over real sockets: header and body read timeouts, idle keep-alive, the
//! connection limit and draining on shutdown.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ecommerce::app::{App, AppConfig};
use ecommerce::http::server::ServerLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct Served {
    public: SocketAddr,
    stop: oneshot::Sender<()>,
    served: JoinHandle<()>,
}

async fn serve(limits: ServerLimits) -> Served {
    let app = App::start(AppConfig {
        server: limits,
        ..AppConfig::embedded()
    })
    .await
    .unwrap();
    let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let internal = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = public.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(async move {
        app.serve_on(public, internal, async {
            let _ = stopped.await;
        })
        .await;
    });
    Served {
        public: addr,
        stop,
        served,
    }
}

fn limits(header_read: u64, body_read: u64, max_connections: usize) -> ServerLimits {
    ServerLimits {
        max_connections,
        header_read_timeout: Duration::from_millis(header_read),
        body_read_timeout: Duration::from_millis(body_read),
        drain_timeout: Duration::from_millis(500),
    }
}

/// Reads until the server closes the connection (or `within` passes: then `None`).
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut chunk = [0_u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&answer).into_owned())
}

/// Reads one response head and its `Content-Length` body (the connection stays open).
async fn read_response(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut chunk = [0_u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before a full response: {answer:?}");
        answer.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if answer.len() >= end + 4 + length {
                return text.into_owned();
            }
        }
    }
}

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nhost: shop\r\n\r\n";

#[tokio::test]
async fn a_connection_that_sends_nothing_or_half_a_request_is_closed_after_the_header_timeout() {
    let served = serve(limits(300, 5_000, 64)).await;
    let mut silent = TcpStream::connect(served.public).await.unwrap();
    let mut half = TcpStream::connect(served.public).await.unwrap();
    half.write_all(b"GET /health HTTP/1.1\r\nhost: sh")
        .await
        .unwrap();
    let started = Instant::now();
    for stream in [&mut silent, &mut half] {
        let answer = read_to_close(stream, Duration::from_secs(5))
            .await
            .expect("the server closes a connection whose headers do not come");
        assert!(!answer.contains("200 OK"), "{answer}");
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "closed after {waited:?}"
    );
    served.stop.send(()).unwrap();
    served.served.await.unwrap();
}

#[tokio::test]
async fn a_kept_alive_connection_left_idle_is_closed_after_the_header_timeout() {
    let served = serve(limits(400, 5_000, 64)).await;
    let mut stream = TcpStream::connect(served.public).await.unwrap();
    for _ in 0..2 {
        // Requests on one kept-alive connection, each within the timeout of the previous.
        stream.write_all(HEALTH).await.unwrap();
        let answer = read_response(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let idle = Instant::now();
    read_to_close(&mut stream, Duration::from_secs(5))
        .await
        .expect("an idle kept-alive connection is closed");
    assert!(
        idle.elapsed() >= Duration::from_millis(200),
        "{:?}",
        idle.elapsed()
    );
    served.stop.send(()).unwrap();
    served.served.await.unwrap();
}

#[tokio::test]
async fn a_body_that_pauses_past_the_body_timeout_is_a_408_problem() {
    let served = serve(limits(5_000, 300, 64)).await;
    let mut stream = TcpStream::connect(served.public).await.unwrap();
    let body = br#"{"email":"ada@example.com","password":"correct horse battery"}"#;
    let head = format!(
        "POST /api/v2/accounts/login HTTP/1.1\r\nhost: shop\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..10]).await.unwrap();
    let started = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(5), read_response(&mut stream))
        .await
        .expect("the server answers a stalled body");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(answer.contains("body read timeout"), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(250));
    served.stop.send(()).unwrap();
    served.served.await.unwrap();
}

#[tokio::test]
async fn past_the_connection_limit_a_client_waits_until_a_slot_frees() {
    let served = serve(limits(10_000, 10_000, 2)).await;
    let holders = [
        TcpStream::connect(served.public).await.unwrap(),
        TcpStream::connect(served.public).await.unwrap(),
    ];
    // Both slots are taken once the server has accepted them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut waiting = TcpStream::connect(served.public).await.unwrap();
    waiting.write_all(HEALTH).await.unwrap();
    let early = tokio::time::timeout(Duration::from_millis(500), read_response(&mut waiting)).await;
    assert!(early.is_err(), "a third connection was served: {early:?}");
    drop(holders);
    let answer = tokio::time::timeout(Duration::from_secs(5), read_response(&mut waiting))
        .await
        .expect("served once a slot frees");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    served.stop.send(()).unwrap();
    served.served.await.unwrap();
}

#[tokio::test]
async fn idle_connections_do_not_keep_health_from_answering() {
    // More idle connections than slots: each slot frees after the header timeout.
    let served = serve(limits(300, 5_000, 8)).await;
    let mut idle = Vec::new();
    for _ in 0..24 {
        idle.push(TcpStream::connect(served.public).await.unwrap());
    }
    let mut health = TcpStream::connect(served.public).await.unwrap();
    health.write_all(HEALTH).await.unwrap();
    let started = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(5), read_response(&mut health))
        .await
        .expect("health answers once idle connections time out");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(idle);
    served.stop.send(()).unwrap();
    served.served.await.unwrap();
}

#[tokio::test]
async fn shutdown_stops_waiting_for_open_connections_after_the_drain_timeout() {
    let served = serve(limits(10_000, 10_000, 64)).await;
    let mut stream = TcpStream::connect(served.public).await.unwrap();
    // A request whose body never finishes: in flight when shutdown comes.
    stream
        .write_all(b"POST /api/v2/accounts/login HTTP/1.1\r\nhost: shop\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    served.stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), served.served)
        .await
        .expect("serving ends after the drain timeout")
        .unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400),
        "returned after {waited:?}, before the drain timeout"
    );
    read_to_close(&mut stream, Duration::from_secs(2))
        .await
        .expect("the connection is closed");
}
