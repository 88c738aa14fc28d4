//! The edge proxy on the process driver: requests for `<app>.localhost` reach the app's
//! started machines in turn with Fly's headers, a stopped machine is started for a
//! request, cordoned machines get no traffic, and unknown hosts are refused.

use std::time::Duration;

use serde_json::json;

use crate::harness::{eventually, free_port, TestServer};

/// A machine serving `GET /` (its name) and `/cgi-bin/env` (the request's headers as
/// CGI variables) with busybox httpd on `port`.
async fn web(s: &TestServer, app: &str, name: &str, port: u16) -> String {
    let script = format!(
        "mkdir -p www/cgi-bin && echo {name} > www/index.html && \
         printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\nenv\\n' > www/cgi-bin/env && chmod +x www/cgi-bin/env && \
         exec busybox httpd -f -p 127.0.0.1:{port} -h www"
    );
    let m = s
        .create_machine(
            app,
            &script,
            json!({"services": [{"protocol": "tcp", "internal_port": port,
            "ports": [{"port": 80, "handlers": ["http"]}]}]}),
        )
        .await;
    m["id"].as_str().unwrap().to_string()
}

async fn get(s: &TestServer, host: &str, path: &str) -> (u16, String) {
    s.proxy_get(host, path, &[("x-forwarded-for", "203.0.113.9")])
        .await
}

#[tokio::test]
async fn routes_balances_adds_headers_and_autostarts() {
    let s = TestServer::start().await;
    s.create_app("site").await;
    let a = web(&s, "site", "alpha", free_port()).await;
    let b = web(&s, "site", "beta", free_port()).await;
    s.wait_state("site", &a, "started").await;
    s.wait_state("site", &b, "started").await;
    let host = format!("site.localhost:{}", s.http_port);

    let mut seen = std::collections::HashSet::new();
    for _ in 0..6 {
        let (status, body) = eventually(10, "an answer", || async {
            let r = get(&s, &host, "/").await;
            (r.0 == 200).then_some(r)
        })
        .await;
        assert_eq!(status, 200);
        seen.insert(body.trim().to_string());
    }
    assert_eq!(seen.len(), 2, "both machines served: {seen:?}");

    let (_, env) = get(&s, &host, "/cgi-bin/env").await;
    for var in [
        "HTTP_FLY_CLIENT_IP=127.0.0.1",
        "HTTP_X_FORWARDED_FOR=203.0.113.9, 127.0.0.1",
        "HTTP_X_FORWARDED_PROTO=http",
        "HTTP_FLY_REGION=ord",
        "HTTP_VIA=1.1 hangar",
    ] {
        assert!(env.lines().any(|l| l == var), "missing {var} in:\n{env}");
    }
    assert!(env.contains("HTTP_FLY_REQUEST_ID="), "{env}");

    // A cordoned machine gets no traffic.
    s.call("POST", &format!("/apps/site/machines/{b}/cordon"), None)
        .await;
    for _ in 0..4 {
        assert_eq!(get(&s, &host, "/").await.1.trim(), "alpha");
    }

    // Nothing started: a request starts a machine and waits for it.
    s.call("POST", &format!("/apps/site/machines/{a}/stop"), None)
        .await;
    s.wait_state("site", &a, "stopped").await;
    let (status, body) = get(&s, &host, "/").await;
    assert_eq!((status, body.trim()), (200, "alpha"), "autostarted");
    assert_eq!(s.machine("site", &a).await["state"], "started");

    let (status, _) = get(&s, &format!("nosuch.localhost:{}", s.http_port), "/").await;
    assert_eq!(status, 404);
    let (status, _) = get(&s, "example.com", "/").await;
    assert_eq!(status, 404);
}

/// A machine that only sleeps, with one service configured by `service`.
async fn idle(s: &TestServer, app: &str, region: &str, service: serde_json::Value) -> String {
    let mut svc = json!({"protocol": "tcp", "internal_port": free_port()});
    for (k, v) in service.as_object().unwrap() {
        svc[k] = v.clone();
    }
    let body = json!({"region": region, "config": {"image": "x", "init": {"exec": ["/bin/sh", "-c", "exec sleep 300"]},
        "services": [svc]}});
    let r = s
        .call("POST", &format!("/apps/{app}/machines"), Some(body))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let id = r.body["id"].as_str().unwrap().to_string();
    s.wait_state(app, &id, "started").await;
    id
}

#[tokio::test]
async fn autostop_stops_idle_machines_one_per_region_per_pass() {
    let s = TestServer::start_with(&["--driver", "process", "--autostop-interval", "500ms"]).await;
    s.create_app("idle").await;
    let a = idle(&s, "idle", "ord", json!({"autostop": "stop"})).await;
    let b = idle(&s, "idle", "ord", json!({"autostop": true})).await;
    let off = idle(&s, "idle", "ord", json!({"autostop": false})).await;
    s.create_app("keep").await;
    let kept = idle(
        &s,
        "keep",
        "ord",
        json!({"autostop": "suspend", "min_machines_running": 1}),
    )
    .await;
    let away = idle(
        &s,
        "keep",
        "ams",
        json!({"autostop": "suspend", "min_machines_running": 1}),
    )
    .await;

    let state = |id: String| {
        let s = &s;
        async move {
            for app in ["idle", "keep"] {
                if let Some(st) = s.machine(app, &id).await["state"].as_str() {
                    return st.to_string();
                }
            }
            String::new()
        }
    };
    eventually(20, "idle machines stopped", || async {
        (state(a.clone()).await == "stopped" && state(b.clone()).await == "stopped").then_some(())
    })
    .await;
    // Outside the primary region min_machines_running does not hold it; suspend is used.
    eventually(20, "the machine away suspended", || async {
        (state(away.clone()).await == "suspended").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(state(off).await, "started", "autostop off");
    assert_eq!(
        state(kept).await,
        "started",
        "min_machines_running in the primary region"
    );
    // The stops were autostop's, made as requested stops.
    let exit = s
        .events("idle", &a)
        .await
        .into_iter()
        .find(|e| e["type"] == "exit")
        .unwrap();
    assert_eq!(exit["request"]["exit_event"]["requested_stop"], true);
}

#[tokio::test]
async fn a_stop_lets_requests_in_flight_finish() {
    let s = TestServer::start().await;
    s.create_app("drain").await;
    let port = free_port();
    // /cgi-bin/slow answers after 3 s; the stop comes while it runs.
    let cgi = "#!/bin/sh\\nsleep 3\\necho Content-Type: text/plain\\necho\\necho finished\\n";
    let script = format!(
        "mkdir -p www/cgi-bin && echo up > www/index.html && printf '{cgi}' > www/cgi-bin/slow && chmod +x www/cgi-bin/slow && exec busybox httpd -f -p 127.0.0.1:{port} -h www"
    );
    let m = s
        .create_machine(
            "drain",
            &script,
            json!({"services": [{"protocol": "tcp", "internal_port": port}]}),
        )
        .await;
    let id = m["id"].as_str().unwrap().to_string();
    s.wait_state("drain", &id, "started").await;
    let host = format!("drain.localhost:{}", s.http_port);
    eventually(10, "the machine to answer", || async {
        (get(&s, &host, "/").await.0 == 200).then_some(())
    })
    .await;

    let slow = get(&s, &host, "/cgi-bin/slow");
    let stop = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let body = json!({"signal": "SIGTERM", "timeout": "8s"});
        s.call(
            "POST",
            &format!("/apps/drain/machines/{id}/stop"),
            Some(body),
        )
        .await
    };
    let ((status, body), stopped) = tokio::join!(slow, stop);
    assert_eq!(stopped.status, 200);
    assert_eq!(
        (status, body.trim()),
        (200, "finished"),
        "the request in flight was not dropped"
    );
    s.wait_state("drain", &id, "stopped").await;
}

#[tokio::test]
async fn checks_are_reported_and_gate_routing() {
    let s = TestServer::start().await;
    s.create_app("chk").await;
    let port = free_port();
    let script = format!("mkdir -p www && echo page > www/index.html && exec busybox httpd -f -p 127.0.0.1:{port} -h www");
    let m = s
        .create_machine("chk", &script, json!({
            "checks": {"alive": {"type": "tcp", "port": port, "interval": "300ms"}},
            "services": [{"protocol": "tcp", "internal_port": port,
                "checks": [{"type": "http", "path": "/health.txt", "interval": "300ms", "timeout": "1s"}]}]}))
        .await;
    let id = m["id"].as_str().unwrap().to_string();
    s.wait_state("chk", &id, "started").await;
    let host = format!("chk.localhost:{}", s.http_port);

    // The service check fails (no /health.txt): reported, and no traffic.
    let checks = eventually(10, "both checks reported", || async {
        let c = s.machine("chk", &id).await["checks"].clone();
        (c.as_array().is_some_and(|a| {
            a.len() == 2
                && a.iter()
                    .any(|x| x["name"] == "alive" && x["status"] == "passing")
        }))
        .then_some(c)
    })
    .await;
    let svc = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] != "alive")
        .unwrap()
        .clone();
    assert!(
        svc["name"].as_str().unwrap().starts_with("servicecheck-"),
        "{svc}"
    );
    assert_eq!(svc["status"], "critical", "{svc}");
    assert!(svc["output"].as_str().unwrap().contains("404"), "{svc}");
    assert_eq!(
        get(&s, &host, "/").await.0,
        503,
        "an unhealthy machine gets no traffic"
    );

    // Healthy: routed.
    s.exec("chk", &id, &["/bin/sh", "-c", "echo ok > www/health.txt"])
        .await;
    let (status, body) = eventually(10, "traffic once healthy", || async {
        let r = get(&s, &host, "/").await;
        (r.0 == 200).then_some(r)
    })
    .await;
    assert_eq!((status, body.trim()), (200, "page"));
    let listed = s.call("GET", "/apps/chk/machines", None).await.body;
    assert!(
        listed[0]["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["status"] == "passing"),
        "{listed}"
    );
}

#[tokio::test]
async fn http_checks_send_headers_and_speak_tls() {
    let s = TestServer::start().await;
    s.create_app("hdr").await;
    // A CGI that is healthy only when the check sends X-Check: yes.
    let port = free_port();
    let script = format!(
        "mkdir -p www/cgi-bin && printf '#!/bin/sh\\nif [ \"$HTTP_X_CHECK\" = yes ]; then echo Status: 200 OK; else echo Status: 500 No; fi\\necho Content-Type: text/plain\\necho\\necho checked\\n' > www/cgi-bin/health && chmod +x www/cgi-bin/health && exec busybox httpd -f -p 127.0.0.1:{port} -h www"
    );
    let check = |headers: serde_json::Value| {
        json!({"checks": {"hdr": {"type": "http", "port": port, "path": "/cgi-bin/health",
            "interval": "300ms", "headers": headers}}})
    };
    let with = s
        .create_machine(
            "hdr",
            &script,
            check(json!([{"name": "X-Check", "values": ["yes"]}])),
        )
        .await;
    let id = with["id"].as_str().unwrap().to_string();
    let status_of = |id: String| {
        let s = &s;
        async move {
            let c = s.machine("hdr", &id).await["checks"].clone();
            c[0]["status"].as_str().map(str::to_string)
        }
    };
    eventually(10, "the check with the header to pass", || async {
        (status_of(id.clone()).await.as_deref() == Some("passing")).then_some(())
    })
    .await;
    let port2 = free_port();
    let script2 = script.replace(&port.to_string(), &port2.to_string());
    let mut without = check(json!({"X-Check": "no"}));
    without["checks"]["hdr"]["port"] = json!(port2);
    let m = s.create_machine("hdr", &script2, without).await;
    let id2 = m["id"].as_str().unwrap().to_string();
    eventually(10, "the check without it to fail", || async {
        (status_of(id2.clone()).await.as_deref() == Some("critical")).then_some(())
    })
    .await;

    // HTTPS checks: a self-signed machine passes only with tls_skip_verify.
    let tls_port = free_port();
    let tls_script = format!(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=m \
         -keyout k.pem -out c.pem -days 1 2>/dev/null && \
         exec openssl s_server -quiet -accept {tls_port} -www -cert c.pem -key k.pem"
    );
    let https = |skip: bool| {
        json!({"checks": {"tls": {"type": "http", "protocol": "https", "port": tls_port,
            "tls_skip_verify": skip, "tls_server_name": "m", "interval": "300ms", "timeout": "2s"}}})
    };
    let m = s.create_machine("hdr", &tls_script, https(true)).await;
    let id3 = m["id"].as_str().unwrap().to_string();
    eventually(15, "the HTTPS check to pass", || async {
        (status_of(id3.clone()).await.as_deref() == Some("passing")).then_some(())
    })
    .await;
    let mut config = s.machine("hdr", &id3).await["config"].clone();
    config["checks"] = https(false)["checks"].clone();
    let r = s
        .call(
            "POST",
            &format!("/apps/hdr/machines/{id3}"),
            Some(json!({"config": config})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let c = eventually(15, "the verifying HTTPS check to fail", || async {
        let c = s.machine("hdr", &id3).await["checks"][0].clone();
        (c["status"] == "critical").then_some(c)
    })
    .await;
    assert!(c["output"].as_str().unwrap().contains("GET /"), "{c}");
}

#[tokio::test]
async fn hard_limits_queue_and_forced_instances_are_honoured() {
    let s = TestServer::start_with(&["--driver", "process", "--proxy-queue-timeout", "3s"]).await;
    s.create_app("lim").await;
    let port = free_port();
    let cgi = |secs: u32| {
        format!("#!/bin/sh\\nsleep {secs}\\necho Content-Type: text/plain\\necho\\necho slow\\n")
    };
    let script = format!(
        "mkdir -p www/cgi-bin && echo busy > www/index.html && printf '{}' > www/cgi-bin/slow && printf '{}' > www/cgi-bin/slower && chmod +x www/cgi-bin/* && exec busybox httpd -f -p 127.0.0.1:{port} -h www",
        cgi(1), cgi(6)
    );
    let m = s
        .create_machine(
            "lim",
            &script,
            json!({"services": [{"protocol": "tcp", "internal_port": port,
            "concurrency": {"type": "requests", "soft_limit": 1, "hard_limit": 1}}]}),
        )
        .await;
    let id = m["id"].as_str().unwrap().to_string();
    s.wait_state("lim", &id, "started").await;
    let host = format!("lim.localhost:{}", s.http_port);
    eventually(10, "an answer", || async {
        (get(&s, &host, "/").await.0 == 200).then_some(())
    })
    .await;
    // At the hard limit a request queues until the machine has room, then is served.
    let slow = get(&s, &host, "/cgi-bin/slow");
    let second = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        get(&s, &host, "/").await
    };
    let ((first_status, _), (status, body)) = tokio::join!(slow, second);
    assert_eq!(first_status, 200);
    assert_eq!(
        (status, body.trim()),
        (200, "busy"),
        "a queued request is served"
    );
    // A queue that does not move within --proxy-queue-timeout is refused.
    let slower = get(&s, &host, "/cgi-bin/slower");
    let second = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        get(&s, &host, "/").await
    };
    let ((first_status, _), (status, body)) = tokio::join!(slower, second);
    assert_eq!(first_status, 200);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("hard limit"), "{body}");

    // fly-force-instance-id picks the machine, and starts it when it is stopped.
    let a = web(&s, "lim", "alpha", free_port()).await;
    s.wait_state("lim", &a, "started").await;
    s.call("POST", &format!("/apps/lim/machines/{a}/stop"), None)
        .await;
    s.wait_state("lim", &a, "stopped").await;
    for _ in 0..3 {
        let r = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}/", s.http_port))
            .header("host", &host)
            .header("fly-force-instance-id", &a)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap().trim(), "alpha");
    }
}

#[tokio::test]
async fn a_woken_machine_serves_before_its_checks_run_and_leaves_when_they_fail() {
    let s = TestServer::start().await;
    s.create_app("woken").await;
    let port = free_port();
    let script = format!(
        "mkdir -p www && echo page > www/index.html && exec busybox httpd -f -p 127.0.0.1:{port} -h www"
    );
    let m = s
        .create_machine(
            "woken",
            &script,
            json!({"services": [{"protocol": "tcp", "internal_port": port, "autostop": "stop",
                "checks": [{"type": "http", "path": "/health.txt", "grace_period": "2s",
                    "interval": "300ms", "timeout": "1s"}]}]}),
        )
        .await;
    let id = m["id"].as_str().unwrap().to_string();
    s.wait_state("woken", &id, "started").await;
    s.call("POST", &format!("/apps/woken/machines/{id}/stop"), None)
        .await;
    s.wait_state("woken", &id, "stopped").await;
    let host = format!("woken.localhost:{}", s.http_port);

    // Started for the request, it answers as soon as it listens: its checks, still in
    // their grace period, have not run.
    let (status, body) = get(&s, &host, "/").await;
    assert_eq!((status, body.trim()), (200, "page"));
    let checks = s.machine("woken", &id).await["checks"].clone();
    assert!(
        checks.as_array().is_none_or(|c| c.is_empty()),
        "answered before any check ran: {checks}"
    );
    // Once its check fails (there is no /health.txt) it gets no more traffic.
    eventually(10, "the check to fail", || async {
        let c = s.machine("woken", &id).await["checks"].clone();
        (c[0]["status"] == "critical").then_some(())
    })
    .await;
    assert_eq!(get(&s, &host, "/").await.0, 503);
}
