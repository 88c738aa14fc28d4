//! Snapshots kept in a real S3-compatible bucket (`s3s-fs`, which checks request
//! signatures): taken, restored, taken again incrementally and removed, and the errors
//! a wrong key, a missing bucket or an unreachable server give.

// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use hangar_agent::volumes::snapshot::s3::{Credentials, S3Config, S3Store};
use hangar_agent::volumes::snapshot::store::SnapshotStore;
use hangar_agent::volumes::snapshot::{self};
use hangar_testkit::TestBucket;

const MB: u64 = 1 << 20;

fn store(bucket: &TestBucket, name: &str, secret: &str) -> Arc<dyn SnapshotStore> {
    let config = S3Config::parse(
        &format!("s3://{name}/hangar/test"),
        Some(&bucket.endpoint),
        "us-east-1",
    )
    .unwrap();
    Arc::new(
        S3Store::with_credentials(config, Credentials::new(bucket.access_key.clone(), secret))
            .unwrap(),
    )
}

fn write_at(image: &Path, at: u64, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new().write(true).open(image).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(bytes).unwrap();
}

#[tokio::test]
async fn snapshots_round_trip_through_a_bucket_and_only_changes_are_sent_again() {
    hangar_testkit::s3_available().unwrap();
    let bucket = TestBucket::start();
    let s3 = store(&bucket, &bucket.bucket, &bucket.secret_key);
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(64 * MB)
        .unwrap();
    // Bytes that never repeat a block (sha256 of a counter).
    let noise: Vec<u8> = (0..(9 * MB / 32) as u32)
        .flat_map(|i| <sha2::Sha256 as sha2::Digest>::digest(i.to_le_bytes()))
        .collect();
    write_at(&image, 8 * MB, &noise);

    let first = snapshot::take(s3.clone(), image.clone(), "vol_s3", "vs_1")
        .await
        .unwrap();
    assert_eq!(first.new_bytes, first.stored_bytes);
    let objects = bucket.objects("hangar/test/vol_s3");
    assert_eq!(
        objects.iter().filter(|o| o.contains("/chunks/")).count(),
        3,
        "three blocks hold data: {objects:?}"
    );
    assert!(objects.contains(&"hangar/test/vol_s3/snapshots/vs_1".to_string()));

    write_at(&image, 40 * MB, b"a change");
    let second = snapshot::take(s3.clone(), image.clone(), "vol_s3", "vs_2")
        .await
        .unwrap();
    assert!(
        second.new_bytes < 64 << 10,
        "only the changed block is sent: {second:?}"
    );

    let back = dir.path().join("back.img");
    snapshot::restore(s3.clone(), "vol_s3", "vs_2", &back, 64 * MB)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(&back).unwrap(),
        std::fs::read(&image).unwrap()
    );

    snapshot::delete(s3.as_ref(), "vol_s3", "vs_1")
        .await
        .unwrap();
    snapshot::delete(s3.as_ref(), "vol_s3", "vs_2")
        .await
        .unwrap();
    assert!(
        bucket.objects("hangar/test/vol_s3").is_empty(),
        "nothing left"
    );
}

#[tokio::test]
async fn a_wrong_key_a_missing_bucket_and_no_server_say_what_to_do() {
    hangar_testkit::s3_available().unwrap();
    let bucket = TestBucket::start();
    let wrong = store(&bucket, &bucket.bucket, "not-the-secret");
    let err = wrong
        .put("vol_x/chunks/00", b"x".to_vec())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("AWS_SECRET_ACCESS_KEY"), "{err}");
    assert!(
        !err.contains("not-the-secret"),
        "no secret in the message: {err}"
    );

    let missing = store(&bucket, "no-such-bucket", &bucket.secret_key);
    let err = missing.list("vol_x/chunks/").await.unwrap_err().to_string();
    assert!(err.contains("does not exist"), "{err}");

    let endpoint = bucket.endpoint.clone();
    drop(bucket);
    let config = S3Config::parse("s3://snapshots", Some(&endpoint), "us-east-1").unwrap();
    let gone = S3Store::with_credentials(config, Credentials::new("k", "s")).unwrap();
    let err = gone.list("vol_x/chunks/").await.unwrap_err().to_string();
    assert!(err.contains("cannot reach the snapshot bucket"), "{err}");
}
