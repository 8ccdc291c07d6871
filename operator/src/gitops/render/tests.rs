use super::*;
use cmp_crds::instance::ConnectorBinding;
use cmp_crds::offering::RuntimeMode;

fn instance(connectors: Vec<ConnectorBinding>) -> Instance {
    let mut i = crate::fixtures::instance("support");
    i.spec.connectors = connectors;
    i
}

fn settings() -> RenderSettings {
    RenderSettings { root: "tenants".into(), fetch_image: "alpine:3.22".into() }
}

fn render_with(instance: &Instance, settings: &RenderSettings) -> Result<InstanceTree, String> {
    let offering = crate::fixtures::offering(RuntimeMode::Dedicated, vec![crate::fixtures::version("1", false)]);
    render_offering(instance, &offering, settings)
}

/// Renders `instance` on the first version of `offering`, in `cmp-acme-support` with 500m / 512Mi per container.
fn render_offering(
    instance: &Instance,
    offering: &Offering,
    settings: &RenderSettings,
) -> Result<InstanceTree, String> {
    let input = RenderInput {
        instance,
        organization: "acme",
        offering,
        version: &offering.spec.versions[0],
        namespace: "cmp-acme-support",
        container_cpu: "500m",
        container_memory: "512Mi",
    };
    render(&input, settings)
}

fn parsed(tree: &InstanceTree, file: &str) -> serde_json::Value {
    serde_yaml::from_str(&tree.files[file]).expect("valid YAML")
}

#[test]
fn an_instance_renders_to_its_own_folder_with_a_kustomization_of_its_files() {
    let tree = render_with(&instance(vec![]), &settings()).expect("renders");
    assert_eq!(tree.dir, "tenants/acme/support/bot");
    let names: Vec<&str> = tree.files.keys().map(String::as_str).collect();
    assert_eq!(names, ["configmap.yaml", "deployment.yaml", "kustomization.yaml", "service.yaml"]);
    let kustomization = parsed(&tree, "kustomization.yaml");
    assert_eq!(kustomization["resources"], serde_json::json!(["configmap.yaml", "deployment.yaml", "service.yaml"]));
    for file in ["configmap.yaml", "deployment.yaml", "service.yaml"] {
        let object = parsed(&tree, file);
        assert_eq!(object["metadata"]["namespace"], "cmp-acme-support", "{file} lands in the runtime namespace");
        assert_eq!(object["metadata"]["labels"]["cmp.gsv.dev/instance"], "bot", "{file}");
        assert!(object["apiVersion"].is_string() && object["kind"].is_string(), "{file} names its kind");
    }
}

#[test]
fn rendering_is_deterministic_and_sorted() {
    let a = render_with(&instance(vec![]), &settings()).expect("renders");
    let b = render_with(&instance(vec![]), &settings()).expect("renders");
    assert_eq!(a, b);
    assert_eq!(a.digest(), b.digest());
    for (file, body) in &a.files {
        assert!(!body.contains("creationTimestamp"), "{file} carries no timestamp");
        // Top-level keys come sorted.
        let keys: Vec<&str> =
            body.lines().filter(|l| !l.starts_with([' ', '-'])).map(|l| l.split(':').next().unwrap_or("")).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "{file}");
    }
}

#[test]
fn a_version_change_changes_only_the_configmap_and_the_digest() {
    let a = render_with(&instance(vec![]), &settings()).expect("renders");
    let mut offering = crate::fixtures::offering(RuntimeMode::Dedicated, vec![crate::fixtures::version("2", false)]);
    offering.spec.versions[0].artifact.sha256 = "b".repeat(64);
    let b = render_offering(&instance(vec![]), &offering, &settings()).expect("renders");
    assert_ne!(a.digest(), b.digest());
    let changed: Vec<&String> = a.files.keys().filter(|f| a.files[*f] != b.files[*f]).collect();
    assert_eq!(changed, ["configmap.yaml"]);
    assert_eq!(parsed(&b, "configmap.yaml")["data"]["artifactSha256"], "b".repeat(64));
}

#[test]
fn the_pod_passes_the_restricted_level_and_fits_the_project_limits() {
    let tree = render_with(&instance(vec![]), &settings()).expect("renders");
    let deployment = parsed(&tree, "deployment.yaml");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(pod["serviceAccountName"], "cmp-runtime");
    assert_eq!(pod["automountServiceAccountToken"], false, "the runtime gets no ServiceAccount token");
    for list in ["initContainers", "containers"] {
        for c in pod[list].as_array().expect("containers") {
            let sc = &c["securityContext"];
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{}", c["name"]);
            assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]), "{}", c["name"]);
            assert_eq!(c["resources"]["limits"], serde_json::json!({"cpu": "500m", "memory": "512Mi"}));
            assert_eq!(c["resources"]["requests"], c["resources"]["limits"]);
        }
    }
}

#[test]
fn the_init_container_checks_the_artifact_before_the_runtime_starts() {
    let tree = render_with(&instance(vec![]), &settings()).expect("renders");
    let deployment = parsed(&tree, "deployment.yaml");
    let init = &deployment["spec"]["template"]["spec"]["initContainers"][0];
    let script = init["command"][2].as_str().expect("script");
    assert!(script.contains("sha256sum -c -"), "{script}");
    assert!(script.find("sha256sum").expect("check") < script.find("mv ").expect("move"), "moved only once checked");
    let env = init["env"].as_array().expect("env");
    assert!(
        env.iter().any(|e| e["name"] == "ARTIFACT_SHA256" && e["valueFrom"]["configMapKeyRef"]["name"] == "bot-flow")
    );
    let config = parsed(&tree, "configmap.yaml");
    assert_eq!(config["data"]["artifactUrl"], "file:///1.json");
    assert_eq!(config["data"]["flowId"], "export-id");
}

#[test]
fn the_runtime_reads_its_own_key_from_the_instances_secret_when_the_offering_names_a_key() {
    let tree = render_with(&instance(vec![]), &settings()).expect("renders");
    let deployment = parsed(&tree, "deployment.yaml");
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"].as_array().expect("env").clone();
    let key = env.iter().find(|e| e["name"] == "LANGFLOW_API_KEY").expect("LANGFLOW_API_KEY");
    assert_eq!(key["valueFrom"]["secretKeyRef"]["name"], "bot-runtime-key");
    assert_eq!(key["valueFrom"]["secretKeyRef"]["key"], "api-key");
    assert!(key.get("value").is_none(), "never the key itself in git");
    assert!(!tree.files.values().any(|f| f.contains("kind: Secret")), "no Secret goes to git");

    let mut keyless = crate::fixtures::offering(RuntimeMode::Dedicated, vec![crate::fixtures::version("1", false)]);
    keyless.spec.runtime.api_key_secret_ref = None;
    let tree = render_offering(&instance(vec![]), &keyless, &settings()).expect("renders");
    let deployment = parsed(&tree, "deployment.yaml");
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"].as_array().expect("env").clone();
    assert!(!env.iter().any(|e| e["name"] == "LANGFLOW_API_KEY"), "no Offering key, no runtime key");
}

#[test]
fn connectors_leave_no_trace_in_the_runtime_which_calls_tools_through_the_gateway() {
    let binding = ConnectorBinding {
        name: "crm".into(),
        type_: "hubspot".into(),
        vault_path: "connectors/acme/support/crm".into(),
        allowed_tools: vec!["get_ticket".into()],
        url: Some("https://desk.example.com/mcp".into()),
        credential: None,
        timeout_seconds: 30,
    };
    let with = render_with(&instance(vec![binding]), &settings()).expect("renders without Vault configured");
    let without = render_with(&instance(vec![]), &settings()).expect("renders");
    assert_eq!(with.files, without.files, "the same runtime, with or without bindings");
    let deployment = parsed(&with, "deployment.yaml");
    let pod = &deployment["spec"]["template"];
    assert!(pod["metadata"]["annotations"].is_null(), "no Vault Agent injection");
    assert_eq!(pod["spec"]["automountServiceAccountToken"], false, "no token to log in with");
    let everything = format!("{:?}", with.files);
    assert!(!everything.contains("connectors/") && !everything.contains("vault"), "{everything}");
}

#[test]
fn a_project_kustomization_lists_its_instances_sorted_once() {
    let body = project_kustomization(&["b".into(), "a".into(), "b".into()]).expect("renders");
    let parsed: serde_json::Value = serde_yaml::from_str(&body).expect("YAML");
    assert_eq!(parsed["resources"], serde_json::json!(["a", "b"]));
}

#[test]
fn the_buyers_settings_are_rendered_as_a_run_places_them_and_nothing_else_is() {
    let mut offering = crate::fixtures::offering(RuntimeMode::Dedicated, vec![crate::fixtures::version("1", false)]);
    offering.spec.versions[0].settings = serde_json::from_value(serde_json::json!([
        {"name": "tone", "type": "string", "choices": ["formal", "casual"], "target": {"global": "TONE"}},
        {"name": "limit", "type": "integer", "minimum": 1, "maximum": 10,
         "target": {"component": "Retriever-1", "field": "k"}},
    ]))
    .expect("settings");
    let mut bot = instance(vec![]);
    bot.spec.config = [("tone", "formal"), ("limit", "4"), ("stray", "x")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let tree = render_offering(&bot, &offering, &settings()).expect("renders");
    let config_map = parsed(&tree, "configmap.yaml");
    let placed: serde_json::Value =
        serde_json::from_str(config_map["data"]["settings.json"].as_str().expect("the settings")).expect("JSON");
    assert_eq!(
        placed,
        serde_json::json!({"globals": {"TONE": "formal"}, "tweaks": {"Retriever-1": {"k": 4}}}),
        "a key that is not a setting is left out"
    );
    let deployment = parsed(&tree, "deployment.yaml");
    let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    let value =
        |name: &str| env.as_array().and_then(|e| e.iter().find(|v| v["name"] == name)).map(|v| v["value"].clone());
    assert_eq!(value("TONE"), Some(serde_json::json!("formal")));
    assert_eq!(value("LANGFLOW_VARIABLES_TO_GET_FROM_ENVIRONMENT"), Some(serde_json::json!("TONE")));
    assert_eq!(value("stray"), None);

    // A value out of bounds is not rendered; without settings the render is as before (no new commit for them).
    bot.spec.config = [("limit".to_string(), "40".to_string())].into_iter().collect();
    let tree = render_offering(&bot, &offering, &settings()).expect("renders");
    assert!(parsed(&tree, "configmap.yaml")["data"]["settings.json"].is_null());
    let plain = render_offering(&instance(vec![]), &offering, &settings()).expect("renders");
    assert_eq!(tree, plain);
}

#[test]
fn a_setting_cannot_reconfigure_the_runtime_process_through_its_environment() {
    let mut offering = crate::fixtures::offering(RuntimeMode::Dedicated, vec![crate::fixtures::version("1", false)]);
    let global =
        |name: &str, global: &str| serde_json::json!({"name": name, "type": "string", "target": {"global": global}});
    offering.spec.versions[0].settings = serde_json::from_value(serde_json::json!([
        global("port", "LANGFLOW_PORT"),
        global("home", "HOME"),
        global("preload", "LD_PRELOAD"),
        global("proxy", "HTTPS_PROXY"),
        global("tone", "TONE"),
    ]))
    .expect("settings");
    let mut bot = instance(vec![]);
    bot.spec.config =
        [("port", "1"), ("home", "/x"), ("preload", "/x/evil.so"), ("proxy", "http://me"), ("tone", "$(HOME) hi")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let tree = render_offering(&bot, &offering, &settings()).expect("renders");
    let deployment = parsed(&tree, "deployment.yaml");
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"].as_array().cloned().expect("env");
    let values = |name: &str| -> Vec<String> {
        env.iter().filter(|v| v["name"] == name).map(|v| v["value"].as_str().unwrap_or_default().to_string()).collect()
    };
    assert_eq!(values("LANGFLOW_PORT"), ["8000"], "the render's own value, once");
    assert_eq!(values("HOME"), ["/tmp"]);
    assert!(values("LD_PRELOAD").is_empty() && values("HTTPS_PROXY").is_empty());
    assert_eq!(values("TONE"), ["$$(HOME) hi"], "no expansion of another variable");
    assert_eq!(values("LANGFLOW_VARIABLES_TO_GET_FROM_ENVIRONMENT"), ["TONE"]);
    // They still reach the runs as request globals (the ConfigMap records them as a run places them).
    let placed = parsed(&tree, "configmap.yaml")["data"]["settings.json"].as_str().map(String::from).expect("settings");
    assert!(placed.contains("LD_PRELOAD") && placed.contains("LANGFLOW_PORT"), "{placed}");
}
