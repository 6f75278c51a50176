//! Dynamic batching end to end: the real enclave started with `--workers 1 --dynamic-batch
//! digits=8` under many concurrent sealed requests, so that requests queue behind the one worker
//! and are joined; every client must still get exactly its own answer (docs/operations.md,
//! "Dynamic batching").

mod common;

use std::sync::Arc;

use sealed_client::npy;
use sealed_wire::Tensor;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_to_a_batching_model_each_get_their_own_answer() {
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let sim = common::Sim::start(
        &["--workers", "1", "--dynamic-batch", "digits=8"],
        &["--metrics-listen", &metrics.to_string()],
    )
    .await;
    let session = Arc::new(sim.session().await);
    let examples: Arc<Vec<(Tensor, Vec<i64>)>> = Arc::new(
        sim.digits
            .examples
            .iter()
            .map(|e| (npy::read_file(&e.file).unwrap(), e.predicted_labels.clone()))
            .collect(),
    );
    assert!(examples.len() >= 2);

    // 16 clients × 6 requests, each client cycling through different digits (and the 8-row
    // example among them), so that joined batches mix inputs and row counts.
    let mut tasks = Vec::new();
    for client in 0..16usize {
        let (session, examples) = (Arc::clone(&session), Arc::clone(&examples));
        tasks.push(tokio::spawn(async move {
            for round in 0..6 {
                let (input, want) = &examples[(client + round) % examples.len()];
                let outputs = session
                    .infer("digits", common::input(input.clone()))
                    .await
                    .unwrap();
                let label = outputs.iter().find(|o| o.name == "label").unwrap();
                assert_eq!(&label.tensor.to_i64().unwrap(), want, "client {client}");
                let probabilities = outputs.iter().find(|o| o.name == "probabilities").unwrap();
                assert_eq!(probabilities.tensor.shape(), [want.len() as u64, 10]);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }

    // 96 requests from 16 clients on one worker queue behind each other, so some ran joined:
    // the enclave counts them, and the host publishes its count from the next health probe
    // (every 2 s).
    let url = format!("http://{metrics}/metrics");
    let mut batched = 0;
    for _ in 0..60 {
        let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
        batched = text
            .lines()
            .find_map(|l| l.strip_prefix("sealed_host_enclave_batched_requests "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .expect("the batched-requests gauge is published");
        if batched > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert!((2..=96).contains(&batched), "batched requests: {batched}");
}

#[tokio::test]
async fn a_bad_dynamic_batch_flag_stops_the_enclave_with_a_usage_error() {
    let out = std::process::Command::new(common::bin_dir().join("sealed-enclave"))
        .args([
            "--listen",
            "unix:/nonexistent/sock",
            "--mock-ca-dir",
            "/nonexistent",
        ])
        .args(["--dynamic-batch", "digits=1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--dynamic-batch"), "{stderr}");
    assert!(stderr.contains("from 2 to 64"), "{stderr}");
}
