//! What a hostile or broken server can make the client do: never hold more than the limit.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use api_client::{Endpoint, HttpStore};
use store::{Store, StoreError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serves one request with a chunked body of `total` bytes (or until the client goes away)
/// and counts what it managed to write.
async fn oversized_server(total: usize) -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let written = Arc::new(AtomicUsize::new(0));
    let count = written.clone();
    let task = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).await.unwrap();
            if n == 0 {
                return;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let header = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
        if conn.write_all(header.as_bytes()).await.is_err() {
            return;
        }
        let chunk = vec![b' '; 64 * 1024];
        let framed = [
            format!("{:x}\r\n", chunk.len()).into_bytes(),
            chunk,
            b"\r\n".to_vec(),
        ]
        .concat();
        while count.load(Ordering::Relaxed) < total {
            if conn.write_all(&framed).await.is_err() {
                return;
            }
            count.fetch_add(64 * 1024, Ordering::Relaxed);
        }
        let _ = conn.write_all(b"0\r\n\r\n").await;
    });
    (url, written, task)
}

#[tokio::test]
async fn an_endless_answer_is_cut_at_the_limit() {
    const LIMIT: usize = 1024 * 1024;
    // Far beyond the limit, yet finite, so that a client without one fails this test
    // instead of exhausting the machine.
    let (url, written, server) = oversized_server(64 * LIMIT).await;
    let client = HttpStore::connect(Endpoint::Tcp(url), None)
        .unwrap()
        .with_max_response_bytes(LIMIT);
    let kind = crds::kind_by_name("Package").unwrap();
    let err = client.list(kind).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m.contains("larger than the limit")),
        "{err}"
    );
    tokio::time::timeout(std::time::Duration::from_secs(30), server)
        .await
        .expect("the server noticed the client left")
        .unwrap();
    // What the server got out: the limit, plus what the sockets buffer.
    let sent = written.load(Ordering::Relaxed);
    assert!(sent < 16 * LIMIT, "the client read {sent} bytes");
}
