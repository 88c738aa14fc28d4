//! The API against hostile clients: one that trickles its request head (slowloris) is
//! cut off while others are served; an oversized `Authorization` header is refused
//! before anything reads it; a header of many tokens is refused without looking them
//! up. The server keeps answering throughout.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::harness::TestServer;

fn addr(s: &TestServer) -> String {
    s.url().trim_start_matches("http://").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_and_oversized_requests_are_cut_off() {
    let s = TestServer::start().await;
    let at = addr(&s);

    // A head sent a header every two seconds, never finished.
    let slow = {
        let at = at.clone();
        std::thread::spawn(move || {
            let mut c = TcpStream::connect(&at).unwrap();
            c.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let started = Instant::now();
            c.write_all(b"GET /v1/apps HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            let mut buf = [0u8; 512];
            for i in 0..30 {
                std::thread::sleep(Duration::from_millis(1800));
                if c.write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
                    .is_err()
                {
                    return started.elapsed();
                }
                match c.read(&mut buf) {
                    Ok(0) => return started.elapsed(),
                    Ok(_) => return started.elapsed(),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return started.elapsed(),
                }
            }
            started.elapsed()
        })
    };
    // Meanwhile the API answers others at once.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r = s.call("GET", "/apps?org_slug=personal", None).await;
    assert_eq!(r.status, 200, "{r:?}");
    let cut = tokio::task::spawn_blocking(move || slow.join().unwrap())
        .await
        .unwrap();
    assert!(
        cut < Duration::from_secs(20),
        "a trickled head held its connection for {cut:?}"
    );

    // 400 KiB of comma-separated tokens.
    let mut c = TcpStream::connect(&at).unwrap();
    let huge = vec!["tok"; 100_000].join(",");
    let head = format!(
        "GET /v1/apps?org_slug=personal HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {huge}\r\nConnection: close\r\n\r\n"
    );
    let _ = c.write_all(head.as_bytes());
    let mut answer = Vec::new();
    let _ = c.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{}",
        &answer[..answer.len().min(200)]
    );

    // A few too many tokens, each small.
    let many = [s.token.as_str(); 9].join(",");
    let r = s
        .raw(
            "GET",
            "/apps?org_slug=personal",
            "",
            Some(&format!("Bearer {many}")),
        )
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(
        r.body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("at most 8"),
        "{r:?}"
    );
    let two = format!("Bearer nope,{}", s.token);
    let r = s
        .raw("GET", "/apps?org_slug=personal", "", Some(&two))
        .await;
    assert_eq!(r.status, 200, "any token of a short list may match: {r:?}");
    let r = s.call("GET", "/apps?org_slug=personal", None).await;
    assert_eq!(r.status, 200, "the server still answers: {r:?}");
}
