//! `deploy/`: what cannot run on a CI machine (an image build, a cluster) checked against the real
//! server and the real binary. The Kubernetes manifests parse as YAML and have their required
//! fields; probe paths are open GET routes of the server's route table and probe ports its port;
//! every container's arguments parse with the real `fusebert` (for each Job index); the
//! Dockerfile runs as a non-root numeric user and copies no CUDA library. And the contract the
//! image relies on, run for real: `fusebert serve` as an unprivileged user on a read-only model
//! folder answers `/ready` and the manifest's probes over HTTP, then drains on SIGTERM; and the
//! corpus Job's pods, as processes with the manifest's arguments, cover the corpus once.
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use yaml_rust2::{Yaml, YamlLoader};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every YAML document of `deploy/k8s/NAME`, by kind.
fn manifests(name: &str) -> BTreeMap<String, Yaml> {
    let path = repo().join("deploy/k8s").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
    let mut by_kind = BTreeMap::new();
    for d in docs {
        for field in ["apiVersion", "kind", "metadata.name"] {
            assert!(at(&d, field).as_str().is_some_and(|s| !s.is_empty()), "{name}: a document without {field}");
        }
        let kind = d["kind"].as_str().unwrap().to_string();
        assert!(by_kind.insert(kind.clone(), d).is_none(), "{name}: two {kind} documents");
    }
    by_kind
}

/// The value at a dotted path (`spec.template.spec`), `BadValue` when any part is missing.
fn at<'a>(y: &'a Yaml, path: &str) -> &'a Yaml {
    path.split('.').fold(y, |y, key| &y[key])
}

/// A required field: present, or the test fails naming it.
fn req<'a>(y: &'a Yaml, path: &str) -> &'a Yaml {
    let v = at(y, path);
    assert!(!v.is_badvalue(), "missing field {path}");
    v
}

fn strings(y: &Yaml, what: &str) -> Vec<String> {
    y.as_vec()
        .unwrap_or_else(|| panic!("{what}: not a list"))
        .iter()
        .map(|v| match v {
            Yaml::String(s) => s.clone(),
            Yaml::Integer(i) => i.to_string(),
            other => panic!("{what}: {other:?} is not a string"),
        })
        .collect()
}

/// The one container of a pod template spec, with its arguments.
fn container<'a>(pod: &'a Yaml, what: &str) -> (&'a Yaml, Vec<String>) {
    let containers = req(pod, "containers").as_vec().unwrap();
    assert_eq!(containers.len(), 1, "{what}: one container");
    let c = &containers[0];
    for f in ["name", "image"] {
        assert!(req(c, f).as_str().is_some(), "{what}: container {f}");
    }
    assert!(c["command"].is_badvalue(), "{what}: `command` would replace the image's ENTRYPOINT (fusebert)");
    (c, strings(req(c, "args"), &format!("{what} args")))
}

/// The value after `flag` in `args`.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter().position(|a| a == name).map(|i| args[i + 1].as_str())
}

/// `fusebert ARGS --help`: clap parses (and checks the values of) every argument before it
/// reaches `--help`, so exit 0 means the arguments are ones the real binary accepts.
fn cli_accepts(args: &[String]) -> Result<(), String> {
    let out = Command::new(env!("CARGO_BIN_EXE_fusebert")).args(args).arg("--help").output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The server's default port, as `fusebert serve --help` says it.
fn default_port() -> u16 {
    let out = Command::new(env!("CARGO_BIN_EXE_fusebert")).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    let port = help.split("--port <PORT>").nth(1).expect("serve --help documents --port");
    let default = port.split("[default: ").nth(1).expect("--port has a default").split(']').next().unwrap();
    default.parse().unwrap()
}

/// The container port a probe's `port` (a name or a number) refers to.
fn probe_port(c: &Yaml, port: &Yaml) -> i64 {
    match port {
        Yaml::Integer(n) => *n,
        Yaml::String(name) => req(c, "ports")
            .as_vec()
            .unwrap()
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_i64())
            .unwrap_or_else(|| panic!("probe port `{name}` is no container port")),
        other => panic!("probe port {other:?}"),
    }
}

/// The pod-level checks shared by the server and the Job: non-root, read-only root filesystem,
/// no privilege escalation, the model folder mounted read-only.
fn check_pod_security(pod: &Yaml, c: &Yaml, what: &str) {
    assert_eq!(req(pod, "securityContext.runAsNonRoot").as_bool(), Some(true), "{what}");
    let uid = req(pod, "securityContext.runAsUser").as_i64().unwrap();
    assert_eq!(uid, dockerfile_user().0, "{what}: runAsUser is the image's USER");
    assert_eq!(req(c, "securityContext.readOnlyRootFilesystem").as_bool(), Some(true), "{what}");
    assert_eq!(req(c, "securityContext.allowPrivilegeEscalation").as_bool(), Some(false), "{what}");
    assert_eq!(strings(req(c, "securityContext.capabilities.drop"), what), ["ALL"], "{what}");
    let mounts = req(c, "volumeMounts").as_vec().unwrap();
    let models = mounts.iter().find(|m| m["mountPath"].as_str() == Some("/models")).expect("/models mounted");
    assert_eq!(models["readOnly"].as_bool(), Some(true), "{what}: the model folder is mounted read-only");
    // the driver's JIT cache must be writable with a read-only root: CUDA_CACHE_PATH on a volume
    let cache = req(c, "env")
        .as_vec()
        .unwrap()
        .iter()
        .find(|e| e["name"].as_str() == Some("CUDA_CACHE_PATH"))
        .and_then(|e| e["value"].as_str())
        .expect("CUDA_CACHE_PATH set");
    assert!(
        mounts.iter().any(|m| m["mountPath"].as_str().is_some_and(|p| cache.starts_with(&format!("{p}/")))),
        "{what}: CUDA_CACHE_PATH {cache} is on no mounted volume"
    );
    let gpus = req(c, "resources.limits")["nvidia.com/gpu"].as_i64();
    assert_eq!(gpus, Some(1), "{what}: one GPU per pod (the NVIDIA device plugin's resource)");
}

#[test]
fn server_manifests_match_the_server_and_the_cli() {
    let server = manifests("server.yaml");
    let dep = &server["Deployment"];
    assert_eq!(req(dep, "apiVersion").as_str(), Some("apps/v1"));
    let pod = req(dep, "spec.template.spec");
    let labels = req(dep, "spec.template.metadata.labels").as_hash().unwrap();
    for (k, v) in req(dep, "spec.selector.matchLabels").as_hash().unwrap() {
        assert_eq!(labels.get(k), Some(v), "the selector matches the pod labels");
    }
    let (c, args) = container(pod, "Deployment");
    assert_eq!(args[0], "serve");
    cli_accepts(&args).unwrap_or_else(|e| panic!("the Deployment's args are not what `fusebert` accepts: {e}"));
    // HOSTNAME (the pod's name, set by Kubernetes) would otherwise be the bind address
    assert_eq!(flag(&args, "--hostname"), Some("0.0.0.0"));
    let port = flag(&args, "--port").map_or(i64::from(default_port()), |p| p.parse().unwrap());
    assert_eq!(port, 3000, "the server's default port");
    let http = req(c, "ports").as_vec().unwrap().iter().find(|p| p["name"].as_str() == Some("http")).unwrap();
    assert_eq!(http["containerPort"].as_i64(), Some(port), "containerPort is the port the server binds");

    // probes: open GET routes of the server (no API key is sent), on its port
    let routes = fusebert_server::http::route_table();
    let open_get = |p: &str| routes.iter().any(|(m, path, protected)| *m == "GET" && path == p && !protected);
    let mut probed = BTreeMap::new();
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let path = req(c, &format!("{probe}.httpGet.path")).as_str().unwrap().to_string();
        assert!(open_get(&path), "{probe} {path}: not an open GET route of the server");
        assert_eq!(probe_port(c, req(c, &format!("{probe}.httpGet.port"))), port, "{probe} port");
        probed.insert(probe, path);
    }
    // /health answers while the server drains, /ready turns 503: liveness must not use /ready
    assert_eq!(probed["livenessProbe"], "/health");
    assert_eq!(probed["readinessProbe"], "/ready");
    assert!(
        req(c, "startupProbe.failureThreshold").as_i64().unwrap()
            * req(c, "startupProbe.periodSeconds").as_i64().unwrap()
            >= 300,
        "the port is bound only after the model loads: allow minutes"
    );

    // SIGTERM: the endpoints go first (preStop), then the drain of at most --shutdown-timeout
    let drain: f64 = flag(&args, "--shutdown-timeout").map_or(30.0, |s| s.parse().unwrap());
    let pre_stop = req(c, "lifecycle.preStop.sleep.seconds").as_i64().unwrap();
    let grace = req(pod, "terminationGracePeriodSeconds").as_i64().unwrap();
    assert!(grace as f64 >= pre_stop as f64 + drain + 1.0, "grace {grace} s < preStop {pre_stop} s + drain {drain} s");
    check_pod_security(pod, c, "Deployment");
    let annotations = req(dep, "spec.template.metadata.annotations");
    assert_eq!(annotations["prometheus.io/path"].as_str(), Some("/metrics"));
    assert!(open_get("/metrics"));
    assert_eq!(annotations["prometheus.io/port"].as_str().map(|p| p.parse::<i64>().unwrap()), Some(port));

    // the Service reaches the pods' named port
    let svc = &server["Service"];
    for (k, v) in req(svc, "spec.selector").as_hash().unwrap() {
        assert_eq!(labels.get(k), Some(v), "the Service selects the Deployment's pods");
    }
    for p in req(svc, "spec.ports").as_vec().unwrap() {
        assert_eq!(probe_port(c, req(p, "targetPort")), port, "Service targetPort");
    }
}

#[test]
fn autoscaling_uses_a_metric_the_server_exports() {
    let hpa = &manifests("autoscaling.yaml")["HorizontalPodAutoscaler"];
    assert_eq!(req(hpa, "apiVersion").as_str(), Some("autoscaling/v2"));
    let dep = &manifests("server.yaml")["Deployment"];
    assert_eq!(req(hpa, "spec.scaleTargetRef.kind").as_str(), Some("Deployment"));
    assert_eq!(req(hpa, "spec.scaleTargetRef.name").as_str(), req(dep, "metadata.name").as_str());
    let metrics = req(hpa, "spec.metrics").as_vec().unwrap();
    assert!(!metrics.is_empty());
    // what the server's /metrics renders (every series is declared even before it has samples)
    let rendered = fusebert_server::metrics::Metrics::default().render();
    for m in metrics {
        assert_eq!(req(m, "type").as_str(), Some("Pods"));
        let name = req(m, "pods.metric.name").as_str().unwrap();
        assert!(rendered.contains(&format!("# TYPE {name} gauge")), "{name}: not a gauge the server exports");
        assert_eq!(req(m, "pods.target.type").as_str(), Some("AverageValue"));
        let v: f64 = req(m, "pods.target.averageValue").as_str().unwrap().parse().unwrap();
        assert!(v > 0.0);
        // the prometheus-adapter rule in the file's comment exposes that series under that name
        let text = std::fs::read_to_string(repo().join("deploy/k8s/autoscaling.yaml")).unwrap();
        assert!(text.contains(&format!("seriesQuery: '{name}{{")) && text.contains(&format!("as: \"{name}\"")));
    }
    assert!(req(hpa, "spec.maxReplicas").as_i64() >= req(hpa, "spec.minReplicas").as_i64());
}

#[test]
fn the_corpus_job_runs_one_shard_per_index() {
    let job = &manifests("corpus-job.yaml")["Job"];
    assert_eq!(req(job, "apiVersion").as_str(), Some("batch/v1"));
    assert_eq!(req(job, "spec.completionMode").as_str(), Some("Indexed"));
    let n = req(job, "spec.completions").as_i64().unwrap();
    assert!(req(job, "spec.parallelism").as_i64().unwrap() <= n);
    let pod = req(job, "spec.template.spec");
    // backoffLimitPerIndex needs Never (a retried index is a new pod, which --resume continues)
    assert_eq!(req(pod, "restartPolicy").as_str(), Some("Never"));
    assert!(req(job, "spec.backoffLimitPerIndex").as_i64().unwrap() >= 1);
    let (c, args) = container(pod, "Job");
    assert_eq!(args[0], "embed");
    assert_eq!(flag(&args, "--shard"), Some(format!("$(JOB_COMPLETION_INDEX)/{n}").as_str()), "N = completions");
    assert!(args.iter().any(|a| a == "--resume"), "a retried pod continues its part");
    let output = flag(&args, "--output").unwrap();
    assert!(output.contains("$(JOB_COMPLETION_INDEX)"), "one output per index: {output}");
    assert!(flag(&args, "--input").is_some());
    check_pod_security(pod, c, "Job");
    // $(JOB_COMPLETION_INDEX) in args expands from a variable the container declares: the index
    let index = req(c, "env").as_vec().unwrap().iter().find(|e| e["name"].as_str() == Some("JOB_COMPLETION_INDEX"));
    assert_eq!(
        index.map(|e| at(e, "valueFrom.fieldRef.fieldPath")).and_then(Yaml::as_str),
        Some("metadata.annotations['batch.kubernetes.io/job-completion-index']")
    );
    // as the kubelet expands them, every index's arguments parse with the real binary
    for k in 0..n {
        let expanded: Vec<String> = args.iter().map(|a| a.replace("$(JOB_COMPLETION_INDEX)", &k.to_string())).collect();
        cli_accepts(&expanded).unwrap_or_else(|e| panic!("index {k}: `fusebert {expanded:?}` is refused: {e}"));
    }
    // the check is real: a bad shard, an unknown flag or an unexpanded index is refused
    let past_the_end = format!("{n}/{n}");
    for bad in [
        vec!["embed", "--input", "x", "--shard", past_the_end.as_str()],
        vec!["embed", "--no-such-flag"],
        vec!["embed", "--input", "x", "--shard", "$(JOB_COMPLETION_INDEX)/4"],
        vec!["serve", "--device", "tpu"],
    ] {
        let bad: Vec<String> = bad.into_iter().map(String::from).collect();
        assert!(cli_accepts(&bad).is_err(), "{bad:?} accepted");
    }
}

/// The final stage's instructions of `deploy/Dockerfile` (continuation lines joined), and the
/// names of all stages' base images.
fn dockerfile() -> (Vec<(String, String)>, Vec<String>) {
    let text = std::fs::read_to_string(repo().join("deploy/Dockerfile")).unwrap();
    let mut joined = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') && cur.is_empty() || t.is_empty() {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => cur.push_str(part),
            None => {
                cur.push_str(t);
                joined.push(std::mem::take(&mut cur));
            }
        }
    }
    let (mut stage, mut bases) = (Vec::new(), Vec::new());
    for ins in joined {
        let (op, rest) = ins.split_once(' ').unwrap_or((ins.as_str(), ""));
        let op = op.to_ascii_uppercase();
        if op == "FROM" {
            stage.clear();
            bases.push(rest.split_whitespace().next().unwrap().to_string());
        }
        stage.push((op, rest.trim().to_string()));
    }
    (stage, bases)
}

/// The final stage's `USER uid:gid`, numeric (Kubernetes' runAsNonRoot can check only a number).
fn dockerfile_user() -> (i64, i64) {
    let (stage, _) = dockerfile();
    let users: Vec<&String> = stage.iter().filter(|(op, _)| op == "USER").map(|(_, v)| v).collect();
    let user = users.last().expect("the final stage sets USER");
    let (uid, gid) = user.split_once(':').unwrap_or((user, user));
    let uid: i64 = uid.parse().unwrap_or_else(|_| panic!("USER {user}: not numeric"));
    (uid, gid.parse().unwrap_or_else(|_| panic!("USER {user}: not a numeric group")))
}

fn json_list(v: &str) -> Vec<String> {
    serde_json::from_str(v).unwrap_or_else(|e| panic!("{v}: not the exec (JSON) form: {e}"))
}

#[test]
fn the_image_is_non_root_and_holds_no_cuda_library() {
    let (stage, bases) = dockerfile();
    assert!(bases.len() >= 2, "multi-stage: {bases:?}");
    let runtime = bases.last().unwrap();
    let cuda = |s: &str| {
        let s = s.to_ascii_lowercase();
        ["cuda", "cublas", "cudnn", "nvrtc", "libnv", "nccl", "nvidia/"].iter().any(|w| s.contains(w))
    };
    assert!(!cuda(runtime), "runtime base {runtime}: a CUDA image");
    let (uid, gid) = dockerfile_user();
    assert!(uid > 0 && gid > 0, "USER {uid}:{gid} is root");
    for (op, rest) in &stage {
        match op.as_str() {
            "COPY" | "ADD" => {
                assert!(!cuda(rest), "{op} {rest}: copies a CUDA library");
                assert!(rest.starts_with("--from=build "), "{op} {rest}: the runtime takes only the built binary");
                let parts: Vec<&str> = rest.split_whitespace().collect();
                assert_eq!(parts[1..], ["/fusebert", "/usr/local/bin/fusebert"], "{op} {rest}");
            }
            "RUN" => panic!("RUN {rest} in the runtime stage: it installs nothing"),
            _ => {}
        }
    }
    let last = |op: &str| stage.iter().filter(|(o, _)| o == op).map(|(_, v)| v.clone()).next_back();
    assert_eq!(json_list(&last("ENTRYPOINT").unwrap()), ["/usr/local/bin/fusebert"]);
    let cmd = json_list(&last("CMD").unwrap());
    cli_accepts(&cmd).unwrap_or_else(|e| panic!("CMD {cmd:?}: {e}"));
    assert_eq!(flag(&cmd, "--hostname"), Some("0.0.0.0"));
    let port = flag(&cmd, "--port").map_or(default_port(), |p| p.parse().unwrap());
    assert_eq!(last("EXPOSE").map(|p| p.parse::<u16>().unwrap()), Some(port));
    let env = stage.iter().filter(|(o, _)| o == "ENV").map(|(_, v)| v.as_str()).collect::<Vec<_>>().join(" ");
    assert!(env.contains("NVIDIA_DRIVER_CAPABILITIES=compute"), "the toolkit mounts libcuda only for `compute`");
    let ignore = std::fs::read_to_string(repo().join("deploy/Dockerfile.dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l.trim() == "target"), "the build context leaves out target/");
}

/// The effective uid of this process.
fn euid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    uid.split_whitespace().nth(2).unwrap().parse().unwrap()
}

/// One HTTP/1.1 request with `Connection: close`: status and body.
fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let status = reply.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
    (status, body)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// Makes `dir` and everything under it read-only (files 0444, folders 0555).
fn read_only(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            read_only(&p);
        } else {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o444)).unwrap();
        }
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
}

const NOBODY: u32 = 65534;

/// A child process killed and reaped when the test ends, passing or failing (a failed assert
/// must not leave a server running).
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How to run the server unprivileged here: directly when this process is not root, through
/// `setpriv` to uid/gid 65534 when it is; `Err(reason)` when neither works.
fn unprivileged(bin: &Path) -> Result<Vec<String>, String> {
    if euid() != 0 {
        return Ok(vec![]);
    }
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"].into_iter().find(|p| Path::new(p).exists());
    let Some(setpriv) = setpriv else {
        return Err("running as root and setpriv (util-linux) is not installed".into());
    };
    let prefix: Vec<String> =
        [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--"].map(String::from).to_vec();
    let probe = Command::new(&prefix[0]).args(&prefix[1..]).arg(bin).arg("--version").output().unwrap();
    if !probe.status.success() {
        return Err(format!(
            "setpriv cannot drop to uid 65534 here: {}",
            String::from_utf8_lossy(&probe.stderr).trim()
        ));
    }
    Ok(prefix)
}

/// The image's contract, run for real: the server as an unprivileged user (uid 65534, as the
/// image's non-root USER) with the model on a read-only folder, started with the Deployment's own
/// arguments (model folder, device, address and port swapped for this machine's), answers the
/// manifest's probe paths and an embedding over HTTP, exports the autoscaler's metric, and exits
/// 0 on SIGTERM.
#[test]
#[cfg(unix)]
fn serve_runs_unprivileged_on_a_read_only_model_folder() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let scratch = std::env::temp_dir().join(format!("fusebert-deploy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    // as in the image: a root-owned binary and a read-only model folder
    let (bin, model) = (scratch.join("bin/fusebert"), scratch.join("models/model"));
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_fusebert"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    copy_dir(&repo().join("testdata/models/tiny-distilbert-mean"), &model);
    read_only(&scratch.join("models"));
    for dir in [&scratch, &scratch.join("bin")] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let prefix = match unprivileged(&bin) {
        Ok(p) => p,
        Err(reason) => {
            eprintln!("SKIPPED serve_runs_unprivileged_on_a_read_only_model_folder: {reason}");
            let _ = Command::new("chmod").args(["-R", "u+w"]).arg(&scratch).status();
            let _ = std::fs::remove_dir_all(&scratch);
            return;
        }
    };
    let user = if prefix.is_empty() { euid() } else { NOBODY };
    let how = if prefix.is_empty() { "directly (not root)" } else { "through setpriv" };
    eprintln!("serve_runs_unprivileged_on_a_read_only_model_folder: the server runs as uid {user}, {how}");
    for e in ["models", "models/model", "models/model/config.json", "models/model/model.safetensors"] {
        let m = std::fs::metadata(scratch.join(e)).unwrap();
        assert!(m.mode() & 0o222 == 0, "{e}: writable");
        // dropped to 65534: root's files, which that user cannot even chmod
        assert!(prefix.is_empty() || m.uid() == 0, "{e}: owned by uid {}", m.uid());
    }

    // the Deployment's args, with this machine's model, device and a free loopback port
    let dep = &manifests("server.yaml")["Deployment"];
    let (_, mut args) = container(req(dep, "spec.template.spec"), "Deployment");
    for (name, value) in
        [("--model", model.to_str().unwrap()), ("--device", "cpu"), ("--hostname", "127.0.0.1"), ("--port", "0")]
    {
        let i = args.iter().position(|a| a == name).unwrap_or_else(|| panic!("the Deployment passes {name}"));
        args[i + 1] = value.into();
    }
    let mut cmd = if prefix.is_empty() { Command::new(&bin) } else { Command::new(&prefix[0]) };
    if !prefix.is_empty() {
        cmd.args(&prefix[1..]).arg(&bin);
    }
    let mut child = Reaped(
        cmd.args(&args)
            .env_remove("FUSEBERT_MODEL")
            .env("HOME", "/nonexistent")
            .current_dir(&scratch)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child = &mut child.0;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut log = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(a) = line.strip_prefix("fusebert serve: listening on http://") {
                let _ = tx.send(a.parse::<SocketAddr>().unwrap());
            }
            log.push(line);
        }
        log
    });
    let addr = match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(a) => a,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the unprivileged server did not listen within 120 s: {:?}", reader.join().unwrap());
        }
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uids: Vec<u32> = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(uids, [user; 4], "the server's real, effective, saved and fs uids");

    let (code, body) = http(addr, "GET", "/ready", None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"ready\""), "{body}");
    let c = &req(dep, "spec.template.spec")["containers"][0];
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let path = req(c, &format!("{probe}.httpGet.path")).as_str().unwrap();
        assert_eq!(http(addr, "GET", path, None).0, 200, "{probe} {path}");
    }
    let (code, body) = http(addr, "POST", "/embed", Some(r#"{"inputs": ["read-only model, unprivileged user"]}"#));
    assert_eq!(code, 200, "{body}");
    let e: Vec<Vec<f32>> = serde_json::from_str(&body).unwrap();
    assert_eq!(e.len(), 1);
    let (code, metrics) = http(addr, "GET", "/metrics", None);
    assert_eq!(code, 200);
    let hpa = &manifests("autoscaling.yaml")["HorizontalPodAutoscaler"];
    let metric = req(&hpa["spec"]["metrics"][0], "pods.metric.name").as_str().unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with(&format!("{metric}{{model="))),
        "{metric} not in /metrics: {metrics}"
    );

    let started = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no exit within 60 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = reader.join().unwrap();
    assert_eq!(code, Some(0), "{log:?}");
    assert!(log.iter().any(|l| l.contains("shutting down")), "{log:?}");
    // leave nothing read-only behind
    let _ = Command::new("chmod").args(["-R", "u+w"]).arg(&scratch).status();
    let _ = std::fs::remove_dir_all(&scratch);
}

/// The rows of a `.npy` written by `embed --output` (float32 `[N, D]`), as bits.
fn npy_rows(path: &Path) -> (usize, Vec<u32>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
    let rows = header.split("'shape': (").nth(1).unwrap().split(',').next().unwrap().trim().parse().unwrap();
    (rows, bytes[10 + hlen..].chunks(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect())
}

/// The Job's pods as processes: each index runs the manifest's own arguments (as the kubelet
/// expands them; the volumes' paths mapped to a scratch folder, the model to a test fixture,
/// `--device cuda` to `cpu`), and the parts, read in index order, hold the unsharded run's rows
/// bit for bit. A pod retried after its part is complete (`--resume`) adds nothing.
#[test]
fn the_corpus_jobs_pods_as_processes_cover_the_corpus_once() {
    let job = &manifests("corpus-job.yaml")["Job"];
    let n = req(job, "spec.completions").as_i64().unwrap();
    let (_, args) = container(req(job, "spec.template.spec"), "Job");
    let scratch = std::env::temp_dir().join(format!("fusebert-deploy-job-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let input = flag(&args, "--input").unwrap();
    let data = Path::new(input).parent().unwrap().to_str().unwrap().to_string();
    // short texts: the fixture's limit is 16 tokens and the Job's args do not --truncate
    let texts: Vec<String> = (0..203).map(|i| format!("doc {i} {}", "dog ".repeat(i % 6))).collect();
    std::fs::write(scratch.join(Path::new(input).file_name().unwrap()), texts.join("\n") + "\n").unwrap();
    let model = repo().join("testdata/models/tiny-distilbert-mean");
    let local = |a: &str, k: Option<i64>| -> String {
        let a = match k {
            Some(k) => a.replace("$(JOB_COMPLETION_INDEX)", &k.to_string()),
            None => a.to_string(),
        };
        let a = a.replace(&data, scratch.to_str().unwrap());
        if a == "/models/model" {
            model.to_str().unwrap().to_string()
        } else {
            a
        }
    };
    let run = |argv: Vec<String>| {
        let out =
            Command::new(env!("CARGO_BIN_EXE_fusebert")).args(&argv).env_remove("FUSEBERT_SHARD").output().unwrap();
        assert!(out.status.success(), "fusebert {argv:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let pod = |k: i64| {
        let mut a: Vec<String> = args.iter().map(|a| local(a, Some(k))).collect();
        let d = a.iter().position(|a| a == "--device").unwrap();
        a[d + 1] = "cpu".into();
        a
    };
    let mut parts = Vec::new();
    for k in 0..n {
        run(pod(k));
        let out = PathBuf::from(flag(&pod(k), "--output").unwrap());
        assert!(out.starts_with(&scratch), "{}: the output is on the data volume", out.display());
        parts.push(out);
    }
    // index 1 retried after it finished: --resume keeps its rows and adds none
    let before = std::fs::read(&parts[1]).unwrap();
    run(pod(1));
    assert!(std::fs::read(&parts[1]).unwrap() == before, "a retried complete pod changed its part");
    // the same arguments without --shard: one process over the whole corpus
    let mut whole: Vec<String> = pod(0);
    let s = whole.iter().position(|a| a == "--shard").unwrap();
    whole.drain(s..s + 2);
    let o = whole.iter().position(|a| a == "--output").unwrap();
    whole[o + 1] = scratch.join("whole.npy").to_str().unwrap().into();
    run(whole);
    let (rows, want) = npy_rows(&scratch.join("whole.npy"));
    assert_eq!(rows, texts.len());
    let got: Vec<(usize, Vec<u32>)> = parts.iter().map(|p| npy_rows(p)).collect();
    assert!(got.iter().all(|(r, _)| *r > 0), "every index has rows: {:?}", got.iter().map(|g| g.0).collect::<Vec<_>>());
    assert_eq!(got.iter().map(|g| g.0).sum::<usize>(), rows, "every row exactly once");
    assert!(
        got.into_iter().flat_map(|g| g.1).collect::<Vec<_>>() == want,
        "the parts in index order differ from the whole"
    );
    let _ = std::fs::remove_dir_all(&scratch);
}
