//! Traffic through the edge under stress and instruction: `fly-replay` to another
//! region, machine and app; hostile and broken clients and machines answered without
//! tying the proxy up; no failed request while machines stop, update and autostop; and
//! bursts at an app with only stopped machines waking one machine under the soft limit,
//! and past it more, none of them twice.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{eventually, free_port, TestServer};

/// A CGI that replays as its query string says, unless the request is itself a replay:
/// then it answers with its name and the `fly-replay-src` it was given.
fn replay_script(name: &str, port: u16) -> String {
    let json = r#"{"region": "sjc", "transform": {"path": "/cgi-bin/show?moved=1",
        "delete_headers": ["cookie"], "set_headers": [{"name": "X-Added", "value": "yes"}]}}"#;
    let json_cgi = format!(
        "#!/bin/sh\necho Content-Type: application/vnd.fly.replay+json\necho\necho '{}'\n",
        json.replace('\n', " ")
    );
    let show_cgi = format!(
        "#!/bin/sh\necho Content-Type: text/plain\necho\necho \"{name} $QUERY_STRING [$HTTP_X_ADDED] [$HTTP_COOKIE]\"\n"
    );
    format!(
        "mkdir -p www/cgi-bin && {} && {} && \
         printf '#!/bin/sh\\necho Content-Type: text/plain\\nif [ -n \"$HTTP_FLY_REPLAY_FAILED\" ]; then echo; echo \"{name} failed $HTTP_FLY_REPLAY_FAILED\"; elif [ -n \"$HTTP_FLY_REPLAY_SRC\" ]; then echo; echo \"{name} $HTTP_FLY_REPLAY_SRC\"; else echo \"fly-replay: $(echo \"$QUERY_STRING\" | sed \"s/\\&/;/g\")\"; echo; echo replaying; fi\\n' > www/cgi-bin/replay && \
         printf '#!/bin/sh\\necho Content-Type: text/plain\\necho \"fly-replay: elsewhere=true\"\\necho\\n' > www/cgi-bin/loop && \
         printf '#!/bin/sh\\necho Content-Type: text/plain\\necho \"fly-replay: nonsense\"\\necho\\n' > www/cgi-bin/bad && \
         chmod +x www/cgi-bin/* && echo {name} > www/index.html && \
         exec busybox httpd -f -p 127.0.0.1:{port} -h www",
        printf_file(&json_cgi, "www/cgi-bin/json"),
        printf_file(&show_cgi, "www/cgi-bin/show"),
    )
}

/// A shell command writing `content` to `path` with printf, quotes and newlines escaped.
fn printf_file(content: &str, path: &str) -> String {
    let escaped = content
        .replace('\\', "\\\\")
        .replace('%', "%%")
        .replace('\'', "\\047")
        .replace('"', "\\042")
        .replace('\n', "\\n");
    format!("printf '{escaped}' > {path}")
}

async fn machine_in(s: &TestServer, app: &str, region: &str, script: &str, extra: Value) -> String {
    let port = extra["port"].as_u64().map_or_else(free_port, |p| p as u16);
    let mut svc = json!({"protocol": "tcp", "internal_port": port,
        "ports": [{"port": 80, "handlers": ["http"]}]});
    if let Some(o) = extra["service"].as_object() {
        for (k, v) in o {
            svc[k] = v.clone();
        }
    }
    let script = script.replace("{port}", &port.to_string());
    let body = json!({"region": region, "config": {"image": "busybox",
        "init": {"exec": ["/bin/sh", "-c", script]}, "services": [svc]}});
    let r = s
        .call("POST", &format!("/apps/{app}/machines"), Some(body))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let id = r.body["id"].as_str().unwrap().to_string();
    s.wait_state(app, &id, "started").await;
    id
}

async fn get(s: &TestServer, host: &str, path: &str) -> (u16, String) {
    s.proxy_get(host, path, &[]).await
}

#[tokio::test]
async fn fly_replay_goes_to_another_region_machine_and_app() {
    let s = TestServer::start().await;
    s.create_app("rp").await;
    s.create_app("target").await;
    let port = free_port();
    let a = machine_in(
        &s,
        "rp",
        "ord",
        &replay_script("ord-a", port),
        json!({"port": port}),
    )
    .await;
    let p = free_port();
    let b = machine_in(
        &s,
        "rp",
        "ord",
        &replay_script("ord-b", p),
        json!({"port": p}),
    )
    .await;
    let p = free_port();
    machine_in(
        &s,
        "rp",
        "sjc",
        &replay_script("sjc-c", p),
        json!({"port": p}),
    )
    .await;
    let p = free_port();
    machine_in(
        &s,
        "target",
        "ord",
        &replay_script("target-t", p),
        json!({"port": p}),
    )
    .await;

    // To a region, with the state echoed in fly-replay-src.
    let (status, body) = get(&s, "rp.localhost", "/cgi-bin/replay?region=sjc&state=s1").await;
    assert_eq!(status, 200, "{body}");
    let (name, src) = body.trim().split_once(' ').unwrap();
    assert_eq!(name, "sjc-c");
    assert!(
        (src.starts_with(&format!("instance={a};")) || src.starts_with(&format!("instance={b};")))
            && src.contains(";region=ord;t=")
            && src.ends_with(";state=s1"),
        "{src}"
    );

    // To one machine, whichever took the request first.
    for _ in 0..3 {
        let (status, body) =
            get(&s, "rp.localhost", &format!("/cgi-bin/replay?instance={b}")).await;
        assert_eq!(status, 200);
        assert!(body.starts_with("ord-b "), "{body}");
    }
    // fly-prefer-instance-id: that machine while it can serve.
    for _ in 0..3 {
        let r = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}/", s.http_port))
            .header("host", "rp.localhost")
            .header("fly-prefer-instance-id", &b)
            .send()
            .await
            .unwrap();
        assert_eq!(r.text().await.unwrap().trim(), "ord-b");
    }
    // To another app.
    let (_, body) = get(&s, "rp.localhost", "/cgi-bin/replay?app=target").await;
    assert!(body.starts_with("target-t "), "{body}");
    // Elsewhere: never the machine that replayed.
    let (_, body) = get(&s, "rp.localhost", "/cgi-bin/replay?elsewhere=true").await;
    let src_instance = body
        .split("instance=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap();
    let answered_by = if body.starts_with("ord-a") {
        a.as_str()
    } else if body.starts_with("ord-b") {
        b.as_str()
    } else {
        "sjc"
    };
    assert_ne!(src_instance, answered_by, "{body}");

    // The JSON form, with its path and headers transformed.
    let r = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/cgi-bin/json", s.http_port))
        .header("host", "rp.localhost")
        .header("cookie", "session=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap().trim(), "sjc-c moved=1 [yes] []");
    // A replay nobody can take falls back to the machine that asked for it.
    let (status, body) = get(
        &s,
        "rp.localhost",
        "/cgi-bin/replay?region=nowhere&fallback=force_self",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(" failed ")
            && body.contains("region=nowhere")
            && body.contains("reason=no_candidate"),
        "{body}"
    );
    let (status, _) = get(&s, "rp.localhost", "/cgi-bin/replay?region=nowhere").await;
    assert_eq!(status, 503, "without a fallback it fails");

    // Replays are bounded, and a malformed instruction is the machine's error.
    let (status, body) = get(&s, "rp.localhost", "/cgi-bin/loop").await;
    assert_eq!(status, 502);
    assert!(body.contains("more than 10"), "{body}");
    let (status, body) = get(&s, "rp.localhost", "/cgi-bin/bad").await;
    assert_eq!(status, 502);
    assert!(body.contains("invalid fly-replay"), "{body}");
    let (status, body) = get(&s, "rp.localhost", "/cgi-bin/replay?app=ghost").await;
    assert_eq!(status, 502);
    assert!(body.contains("ghost"), "{body}");
}

/// Sends raw bytes and returns what comes back before the proxy closes or 5 s pass.
fn raw(port: u16, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn hostile_clients_and_silent_machines_do_not_tie_the_proxy_up() {
    let s =
        TestServer::start_with(&["--driver", "process", "--proxy-response-timeout", "2s"]).await;
    s.create_app("ok").await;
    s.create_app("mute").await;
    let p = free_port();
    machine_in(
        &s,
        "ok",
        "ord",
        &replay_script("fine", p),
        json!({"port": p}),
    )
    .await;
    // Accepts connections and never answers.
    machine_in(
        &s,
        "mute",
        "ord",
        "exec busybox nc -ll -p {port} -e sleep 600",
        json!({}),
    )
    .await;

    let mute = {
        let port = s.http_port;
        tokio::spawn(async move {
            let started = Instant::now();
            let r = reqwest::Client::new()
                .get(format!("http://127.0.0.1:{port}/"))
                .header("host", "mute.localhost")
                .timeout(Duration::from_secs(30))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), started.elapsed())
        })
    };
    // A slowloris connection dribbles its headers.
    let http_port = s.http_port;
    let slow = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(("127.0.0.1", http_port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 256];
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: ok.localhost\r\n")
            .unwrap();
        for i in 0..30 {
            if stream
                .write_all(format!("X-Slow-{i}: a\r\n").as_bytes())
                .is_err()
            {
                return started.elapsed();
            }
            match stream.read(&mut buf) {
                Ok(0) => return started.elapsed(),
                Ok(_) => return started.elapsed(),
                Err(_) => {}
            }
        }
        started.elapsed()
    });
    // Meanwhile everyone else is served promptly.
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(get(&s, "ok.localhost", "/").await, (200, "fine\n".into()));
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    let (status, waited) = mute.await.unwrap();
    assert_eq!(status, 504, "a silent machine times out");
    assert!(waited < Duration::from_secs(10), "{waited:?}");

    // Oversized and malformed requests get HTTP errors, not a crash.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: ok.localhost\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let port = s.http_port;
    let answer = tokio::task::spawn_blocking(move || raw(port, big.as_bytes()))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.80}");
    let answer = tokio::task::spawn_blocking(move || raw(port, b"NONSENSE\r\n\r\n"))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:.80}");

    let slow_for = slow.await.unwrap();
    assert!(
        slow_for < Duration::from_secs(25),
        "the slowloris connection is cut at the header deadline, not kept: {slow_for:?}"
    );
    assert_eq!(get(&s, "ok.localhost", "/").await.0, 200, "still serving");
    assert!(s.call("GET", "/apps/ok", None).await.status == 200);
}

#[tokio::test]
async fn no_failed_requests_while_machines_stop_update_and_autostop() {
    let s = TestServer::start_with(&["--driver", "process", "--autostop-interval", "1s"]).await;
    s.create_app("steady").await;
    let service = json!({"service": {"autostop": "stop", "min_machines_running": 1}});
    let p = free_port();
    let a = machine_in(
        &s,
        "steady",
        "ord",
        &replay_script("a", p),
        json!({"port": p, "service": service["service"]}),
    )
    .await;
    let p = free_port();
    let b = machine_in(
        &s,
        "steady",
        "ord",
        &replay_script("b", p),
        json!({"port": p, "service": service["service"]}),
    )
    .await;

    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (done, ok, failed) = (done.clone(), ok.clone(), failed.clone());
        let port = s.http_port;
        workers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            while !done.load(Ordering::Relaxed) {
                let r = client
                    .get(format!("http://127.0.0.1:{port}/"))
                    .header("host", "steady.localhost")
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failed
                        .lock()
                        .unwrap()
                        .push(format!("status {}", r.status())),
                    Err(e) => failed.lock().unwrap().push(e.to_string()),
                }
            }
        }));
    }
    // By hand: stop one, start it again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.call("POST", &format!("/apps/steady/machines/{a}/stop"), None)
        .await;
    s.wait_state("steady", &a, "stopped").await;
    s.call("POST", &format!("/apps/steady/machines/{a}/start"), None)
        .await;
    s.wait_state("steady", &a, "started").await;
    // An update replaces the other's process.
    let mut config = s.machine("steady", &b).await["config"].clone();
    config["env"] = json!({"RELEASE": "2"});
    let r = s
        .call(
            "POST",
            &format!("/apps/steady/machines/{b}"),
            Some(json!({"config": config})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    s.wait_state("steady", &b, "started").await;
    // Autostop takes the app down to min_machines_running while the load goes on.
    eventually(30, "autostop to leave one machine", || async {
        let list = s.call("GET", "/apps/steady/machines", None).await.body;
        let started = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["state"] == "started")
            .count();
        (started == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    done.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let failed = failed.lock().unwrap().clone();
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert!(
        ok.load(Ordering::Relaxed) > 100,
        "{} requests",
        ok.load(Ordering::Relaxed)
    );
}

/// How many times the machine has been started (its `started` events).
pub(crate) async fn starts(s: &TestServer, app: &str, id: &str) -> usize {
    s.events(app, id)
        .await
        .iter()
        .filter(|e| e["type"] == "start" && e["status"] == "started")
        .count()
}

async fn burst(s: &TestServer, app: &str, n: usize) -> Vec<u16> {
    let client = reqwest::Client::new();
    let port = s.http_port;
    let host = format!("{app}.localhost");
    let requests = (0..n).map(|_| {
        let (client, host) = (client.clone(), host.clone());
        tokio::spawn(async move {
            let r = client
                .get(format!("http://127.0.0.1:{port}/"))
                .header("host", host)
                .timeout(Duration::from_secs(60))
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        })
    });
    futures_join(requests.collect()).await
}

#[tokio::test]
async fn a_burst_at_stopped_machines_starts_each_at_most_once() {
    let s = TestServer::start().await;
    s.create_app("burst").await;
    let mut ids = Vec::new();
    for name in ["x", "y", "z"] {
        let p = free_port();
        let id = machine_in(
            &s,
            "burst",
            "ord",
            &replay_script(name, p),
            json!({"port": p}),
        )
        .await;
        s.call("POST", &format!("/apps/burst/machines/{id}/stop"), None)
            .await;
        s.wait_state("burst", &id, "stopped").await;
        ids.push(id);
    }
    // Under the soft limit (20), a burst wakes one machine.
    let statuses = burst(&s, "burst", 10).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let mut started = Vec::new();
    for id in &ids {
        if s.machine("burst", id).await["state"] == "started" {
            started.push(id.clone());
        }
    }
    assert_eq!(
        started.len(),
        1,
        "one machine for a burst under its soft limit"
    );
    for id in &ids {
        s.call("POST", &format!("/apps/burst/machines/{id}/stop"), None)
            .await;
        s.wait_state("burst", id, "stopped").await;
    }
    // Past it, others are woken, each once.
    let mut before = Vec::new();
    for id in &ids {
        before.push(starts(&s, "burst", id).await);
    }
    let statuses = burst(&s, "burst", 100).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    for (id, was) in ids.iter().zip(before) {
        let now = starts(&s, "burst", id).await;
        assert!(
            now <= was + 1,
            "machine {id} started {} times for one burst",
            now - was
        );
    }
}

/// Serves its name at `/` and, after 3 s, at `/cgi-bin/slow`.
fn slow_site(name: &str, port: u16) -> String {
    format!(
        "mkdir -p www/cgi-bin && echo {name} > www/index.html && \
         printf '#!/bin/sh\\nsleep 3\\necho Content-Type: text/plain\\necho\\necho {name}\\n' > www/cgi-bin/slow && \
         chmod +x www/cgi-bin/slow && exec busybox httpd -f -p 127.0.0.1:{port} -h www"
    )
}

#[tokio::test]
async fn soft_limits_regions_and_suspended_machines() {
    let s = TestServer::start().await;
    // Soft limit 1: while one machine serves a slow request, the other takes the rest.
    s.create_app("soft").await;
    let limits = json!({"service": {"concurrency": {"type": "requests", "soft_limit": 1}}});
    for name in ["one", "two"] {
        let p = free_port();
        let mut extra = limits.clone();
        extra["port"] = json!(p);
        machine_in(&s, "soft", "ord", &slow_site(name, p), extra).await;
    }
    let slow = get(&s, "soft.localhost", "/cgi-bin/slow");
    let quick = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut seen = Vec::new();
        for _ in 0..6 {
            seen.push(get(&s, "soft.localhost", "/").await.1.trim().to_string());
        }
        seen
    };
    let ((_, busy), seen) = tokio::join!(slow, quick);
    let busy = busy.trim().to_string();
    assert!(
        seen.iter().all(|n| *n != busy),
        "{busy} was over its soft limit, yet served {seen:?}"
    );

    // Local first; another region only when the local machine is at its hard limit.
    s.create_app("near").await;
    let hard = json!({"concurrency": {"type": "requests", "soft_limit": 1, "hard_limit": 1}});
    let p = free_port();
    machine_in(
        &s,
        "near",
        "ord",
        &slow_site("local", p),
        json!({"port": p, "service": hard}),
    )
    .await;
    let p = free_port();
    machine_in(
        &s,
        "near",
        "sjc",
        &slow_site("far", p),
        json!({"port": p, "service": hard}),
    )
    .await;
    for _ in 0..3 {
        assert_eq!(get(&s, "near.localhost", "/").await.1.trim(), "local");
    }
    let slow = get(&s, "near.localhost", "/cgi-bin/slow");
    let spill = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        get(&s, "near.localhost", "/").await
    };
    let ((_, first), (_, second)) = tokio::join!(slow, spill);
    assert_eq!((first.trim(), second.trim()), ("local", "far"));

    // A suspended machine is resumed for a request.
    s.create_app("nap").await;
    let p = free_port();
    let id = machine_in(
        &s,
        "nap",
        "ord",
        &slow_site("napper", p),
        json!({"port": p}),
    )
    .await;
    s.call("POST", &format!("/apps/nap/machines/{id}/suspend"), None)
        .await;
    s.wait_state("nap", &id, "suspended").await;
    assert_eq!(
        get(&s, "nap.localhost", "/").await,
        (200, "napper\n".to_string())
    );
    assert_eq!(s.machine("nap", &id).await["state"], "started");
}

async fn futures_join(handles: Vec<tokio::task::JoinHandle<u16>>) -> Vec<u16> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
