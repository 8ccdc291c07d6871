//! What a Dedicated Instance's runtime looks like in git: a pure function of
//! the CRs, written as deterministic YAML (keys sorted, no timestamps), so an
//! unchanged Instance renders the same bytes and Argo CD never flaps.
//!
//! Layout under the repository's root folder (`tenants` by default):
//!
//! ```text
//! tenants/<org>/<project>/kustomization.yaml          lists the Project's Instances
//! tenants/<org>/<project>/<instance>/kustomization.yaml
//! tenants/<org>/<project>/<instance>/configmap.yaml   flow id, artifact URL and sha256; the buyer's settings
//! tenants/<org>/<project>/<instance>/deployment.yaml  the runtime, behind an init container that checks the artifact
//! tenants/<org>/<project>/<instance>/service.yaml
//! ```

use std::collections::BTreeMap;

use cmp_crds::Instance;
use cmp_crds::names::{INSTANCE_LABEL, owned_labels};
use cmp_crds::offering::{Offering, OfferingVersion};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapKeySelector, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, SecretKeySelector, SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::project::desired::names::RUNTIME_SA;

/// What the renderer needs besides the CRs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderSettings {
    /// The folder of the repository that holds every tenant (`tenants`).
    pub root: String,
    /// The image of the init container that fetches and checks the flow artifact (needs `sh`, `wget` and `sha256sum`).
    pub fetch_image: String,
}

/// Everything one Instance's runtime needs from the CRs.
pub struct RenderInput<'a> {
    /// The Instance.
    pub instance: &'a Instance,
    /// Its Organization's name.
    pub organization: &'a str,
    /// Its Offering.
    pub offering: &'a Offering,
    /// The version it runs.
    pub version: &'a OfferingVersion,
    /// Its Project's runtime namespace.
    pub namespace: &'a str,
    /// CPU and memory of each container (the Project's per-container quota).
    pub container_cpu: &'a str,
    /// Memory of each container.
    pub container_memory: &'a str,
}

/// An Instance's folder in the repository: relative file names and their bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceTree {
    /// `tenants/<org>/<project>/<instance>`.
    pub dir: String,
    /// File name → contents.
    pub files: BTreeMap<String, String>,
}

impl InstanceTree {
    /// A digest of the folder: equal digests, equal bytes in git.
    pub fn digest(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(self.dir.as_bytes());
        for (name, body) in &self.files {
            hash.update([0]);
            hash.update(name.as_bytes());
            hash.update([0]);
            hash.update(body.as_bytes());
        }
        hex::encode(hash.finalize())
    }
}

/// The folder of a Project: `<root>/<org>/<project>`.
pub fn project_dir(root: &str, organization: &str, project: &str) -> String {
    format!("{}/{organization}/{project}", root.trim_matches('/'))
}

/// The folder of an Instance.
pub fn instance_dir(root: &str, organization: &str, project: &str, instance: &str) -> String {
    format!("{}/{instance}", project_dir(root, organization, project))
}

/// Deterministic YAML: every map sorted by key (serde_json's map is ordered), no timestamps.
pub fn yaml(value: &impl Serialize) -> Result<String, String> {
    let value = serde_json::to_value(value).map_err(|e| e.to_string())?;
    serde_yaml::to_string(&value).map_err(|e| e.to_string())
}

/// A kustomization listing `resources` in the order given (callers sort).
pub fn kustomization(resources: &[String]) -> Result<String, String> {
    yaml(&serde_json::json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": resources,
    }))
}

/// Files of a Project's folder, given the Instance folders it holds.
pub fn project_kustomization(instances: &[String]) -> Result<String, String> {
    let mut sorted = instances.to_vec();
    sorted.sort();
    sorted.dedup();
    kustomization(&sorted)
}

/// Where a Dedicated runtime's flow is, in both of its containers.
pub const FLOWS_DIR: &str = "/flows";
/// The flow's file name there.
pub const FLOW_FILE: &str = "flow.json";
const CONFIG_FLOW_ID: &str = "flowId";
const CONFIG_ARTIFACT_URL: &str = "artifactUrl";
const CONFIG_ARTIFACT_SHA256: &str = "artifactSha256";
const CONFIG_VERSION: &str = "version";
/// The buyer's settings as a run places them: `{"globals": {...}, "tweaks": {...}}` (only when there are any).
const CONFIG_SETTINGS: &str = "settings.json";
/// The uid the runtime runs as (the `restricted` level forbids root).
const RUN_AS_USER: i64 = 1000;

fn config_map_name(instance: &str) -> String {
    format!("{instance}-flow")
}

fn env_from_config(name: &str, config_map: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            config_map_key_ref: Some(ConfigMapKeySelector { name: config_map.into(), key: key.into(), optional: None }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn restricted() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
        run_as_non_root: Some(true),
        read_only_root_filesystem: Some(true),
        ..Default::default()
    }
}

fn resources(cpu: &str, memory: &str) -> ResourceRequirements {
    let amounts =
        BTreeMap::from([("cpu".to_string(), Quantity(cpu.into())), ("memory".to_string(), Quantity(memory.into()))]);
    ResourceRequirements { requests: Some(amounts.clone()), limits: Some(amounts), ..Default::default() }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount { name: name.into(), mount_path: path.into(), ..Default::default() }
}

/// The fetch-and-verify script of the init container (`sh -c`, with `ARTIFACT_URL` and `ARTIFACT_SHA256`): the
/// runtime never starts on a flow whose sha256 differs.
pub fn fetch_script() -> String {
    format!(
        "set -eu\nwget -q -O {FLOWS_DIR}/{FLOW_FILE}.part \"$ARTIFACT_URL\"\n\
         echo \"$ARTIFACT_SHA256  {FLOWS_DIR}/{FLOW_FILE}.part\" | sha256sum -c -\n\
         mv {FLOWS_DIR}/{FLOW_FILE}.part {FLOWS_DIR}/{FLOW_FILE}\n"
    )
}

/// The buyer's settings (`spec.config` parsed against the version's `settings`), placed as the gateway places them
/// on every run: the tweaks and the request globals. Keys that are not settings, or whose values do not parse, are
/// left out (the Instance's status names them).
fn placed_settings(input: &RenderInput<'_>) -> (serde_json::Map<String, serde_json::Value>, BTreeMap<String, String>) {
    let (settings, _) = cmp_crds::inputs::parse_settings(&input.version.settings, &input.instance.spec.config);
    let (mut tweaks, mut globals) = (serde_json::Map::new(), serde_json::Map::new());
    for (setting, value) in settings {
        cmp_crds::inputs::place(setting, value, &mut tweaks, &mut globals);
    }
    let globals = globals.into_iter().map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string())).collect();
    (tweaks, globals)
}

/// Whether a setting's global may become an environment variable of the runtime: not one the render sets, nor one
/// that configures the process rather than the flow (Langflow's own, the loader's, Python's, TLS and proxies, `PATH`,
/// `HOME`). Those stay in `settings.json` and still reach each run as a request global; as a variable they would let
/// a buyer's value reconfigure the runtime.
fn env_safe(global: &str) -> bool {
    const EXACT: &[&str] = &["PATH", "HOME", "CMP_FLOW_ID", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"];
    const PREFIXES: &[&str] = &["LANGFLOW_", "LFX_", "LD_", "PYTHON", "SSL_", "UV_", "PIP_"];
    !EXACT.contains(&global) && !PREFIXES.iter().any(|p| global.starts_with(p)) && !global.ends_with("_PROXY")
}

/// The runtime's environment for the settings that are globals ([`env_safe`]): each as a variable of its name, which
/// Langflow reads into its global variables (`LANGFLOW_VARIABLES_TO_GET_FROM_ENVIRONMENT`). A value's `$(` is
/// written `$$(`, so Kubernetes does not expand it as a reference to another variable.
fn settings_env(globals: &BTreeMap<String, String>) -> Vec<EnvVar> {
    let safe: Vec<(&String, &String)> = globals.iter().filter(|(name, _)| env_safe(name)).collect();
    if safe.is_empty() {
        return Vec::new();
    }
    let literal =
        |name: &str, value: &str| EnvVar { name: name.into(), value: Some(value.into()), ..Default::default() };
    let names: Vec<&str> = safe.iter().map(|(name, _)| name.as_str()).collect();
    let mut env = vec![
        literal("LANGFLOW_STORE_ENVIRONMENT_VARIABLES", "true"),
        literal("LANGFLOW_VARIABLES_TO_GET_FROM_ENVIRONMENT", &names.join(",")),
    ];
    env.extend(safe.iter().map(|(name, value)| literal(name, &value.replace("$(", "$$("))));
    env
}

/// The Instance's folder, or why it cannot be rendered.
pub fn render(input: &RenderInput<'_>, settings: &RenderSettings) -> Result<InstanceTree, String> {
    let instance = input.instance.name_any();
    let project = input.instance.spec.project.as_str();
    let namespace = input.namespace;
    let runtime = &input.offering.spec.runtime;
    let mut labels = owned_labels(input.organization, Some(project));
    labels.insert(INSTANCE_LABEL.into(), instance.clone());
    let selector = BTreeMap::from([(INSTANCE_LABEL.to_string(), instance.clone())]);
    let meta = |name: String| ObjectMeta {
        name: Some(name),
        namespace: Some(namespace.into()),
        labels: Some(labels.clone()),
        ..Default::default()
    };
    let config = config_map_name(&instance);
    let mut data = BTreeMap::from([
        (CONFIG_FLOW_ID.into(), input.version.flow_id.clone()),
        (CONFIG_ARTIFACT_URL.into(), input.version.artifact.url.clone()),
        (CONFIG_ARTIFACT_SHA256.into(), input.version.artifact.sha256.clone()),
        (CONFIG_VERSION.into(), input.version.name.clone()),
    ]);
    let (tweaks, globals) = placed_settings(input);
    if !tweaks.is_empty() || !globals.is_empty() {
        let placed = serde_json::json!({"globals": globals, "tweaks": tweaks});
        data.insert(CONFIG_SETTINGS.into(), placed.to_string());
    }
    let config_map = ConfigMap { metadata: meta(config.clone()), data: Some(data), ..Default::default() };

    // Connector bindings leave no trace here: the runtime calls tools through the gateway's connector route
    // with its run's token, and the gateway alone reads the credentials.
    let port = runtime.port;
    let http = |path: &str| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..Default::default()
        }),
        period_seconds: Some(10),
        ..Default::default()
    };
    let volumes = vec![
        Volume { name: "flows".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() },
        Volume { name: "tmp".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() },
    ];
    let fetch = Container {
        name: "fetch-flow".into(),
        image: Some(settings.fetch_image.clone()),
        command: Some(vec!["sh".into(), "-c".into(), fetch_script()]),
        env: Some(vec![
            env_from_config("ARTIFACT_URL", &config, CONFIG_ARTIFACT_URL),
            env_from_config("ARTIFACT_SHA256", &config, CONFIG_ARTIFACT_SHA256),
        ]),
        resources: Some(resources(input.container_cpu, input.container_memory)),
        security_context: Some(restricted()),
        volume_mounts: Some(vec![mount("flows", FLOWS_DIR)]),
        ..Default::default()
    };
    let mut env = vec![
        env_from_config("CMP_FLOW_ID", &config, CONFIG_FLOW_ID),
        EnvVar { name: "LANGFLOW_HOST".into(), value: Some("0.0.0.0".into()), ..Default::default() },
        EnvVar { name: "LANGFLOW_PORT".into(), value: Some(port.to_string()), ..Default::default() },
        EnvVar { name: "LANGFLOW_LOAD_FLOWS_PATH".into(), value: Some(FLOWS_DIR.into()), ..Default::default() },
        EnvVar { name: "HOME".into(), value: Some("/tmp".into()), ..Default::default() },
    ];
    if input.offering.spec.runtime.api_key_secret_ref.is_some() {
        // The Instance's own key, derived from the Offering's (cmp_crds::runtime_key): the operator writes the
        // Secret in the runtime namespace, never in git, and the gateway derives the same key for each run.
        env.push(EnvVar {
            name: "LANGFLOW_API_KEY".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: cmp_crds::runtime_key::secret_name(&instance),
                    key: cmp_crds::runtime_key::SECRET_DATA_KEY.into(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    env.extend(settings_env(&globals));
    let runtime_container = Container {
        name: "runtime".into(),
        image: Some(runtime.image.clone()),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: port,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        readiness_probe: Some(http("/health")),
        resources: Some(resources(input.container_cpu, input.container_memory)),
        security_context: Some(restricted()),
        volume_mounts: Some(vec![mount("flows", FLOWS_DIR), mount("tmp", "/tmp")]),
        ..Default::default()
    };
    let deployment = Deployment {
        metadata: meta(instance.clone()),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector { match_labels: Some(selector.clone()), ..Default::default() },
            strategy: Some(DeploymentStrategy { type_: Some("RollingUpdate".into()), ..Default::default() }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels.clone()), annotations: None, ..Default::default() }),
                spec: Some(PodSpec {
                    service_account_name: Some(RUNTIME_SA.into()),
                    // The Vault agent logs in with the ServiceAccount's token; without connectors, no token is mounted.
                    // The runtime needs no token: nothing it does talks to the API server or OpenBao.
                    automount_service_account_token: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS_USER),
                        run_as_group: Some(RUN_AS_USER),
                        fs_group: Some(RUN_AS_USER),
                        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
                        ..Default::default()
                    }),
                    init_containers: Some(vec![fetch]),
                    containers: vec![runtime_container],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    };
    let service = Service {
        metadata: meta(instance.clone()),
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    };
    let files = [
        ("configmap.yaml", yaml(&config_map)?),
        ("deployment.yaml", yaml(&deployment)?),
        ("service.yaml", yaml(&service)?),
    ];
    let mut tree: BTreeMap<String, String> = files.into_iter().map(|(n, b)| (n.to_string(), b)).collect();
    let resources: Vec<String> = tree.keys().cloned().collect();
    tree.insert("kustomization.yaml".into(), kustomization(&resources)?);
    Ok(InstanceTree { dir: instance_dir(&settings.root, input.organization, project, &instance), files: tree })
}

#[cfg(test)]
mod tests;
