//! Objects the unit tests of several pipelines build (test-only).

use cmp_crds::offering::{Artifact, OfferingSpec, OfferingVersion, Plan, Runtime, RuntimeMode, SecretKeyRef};
use cmp_crds::{Instance, InstanceSpec, Offering};

/// Version `name` of an Offering, its artifact at `file:///<name>.json`.
pub fn version(name: &str, deprecated: bool) -> OfferingVersion {
    OfferingVersion {
        name: name.into(),
        artifact: Artifact { url: format!("file:///{name}.json"), sha256: "a".repeat(64) },
        flow_id: "export-id".into(),
        deprecated,
        inputs: vec![],
        settings: vec![],
    }
}

/// The Offering `echo` in `mode`, with `versions` and the plans `basic` and `pro`. Its Shared runtime is at
/// `http://127.0.0.1:9`, its key in the Secret `cmp/lfx`.
pub fn offering(mode: RuntimeMode, versions: Vec<OfferingVersion>) -> Offering {
    let plan = |id: &str| Plan {
        id: id.into(),
        display_name: String::new(),
        credits_per_run: 1,
        included_credits: 0,
        requests_per_minute: 60,
        timeout_seconds: 60,
        credits_per_tool_call: 0,
        credits_per_chunk: 0,
        saleor_sku: None,
    };
    let runtime = Runtime {
        engine: Default::default(),
        api: Default::default(),
        mode,
        image: "img".into(),
        port: 8000,
        endpoint: Some("http://127.0.0.1:9".into()),
        api_key_secret_ref: Some(SecretKeyRef { namespace: "cmp".into(), name: "lfx".into(), key: "key".into() }),
    };
    let spec = OfferingSpec {
        display_name: "Echo".into(),
        description: String::new(),
        publisher: String::new(),
        runtime,
        versions,
        plans: vec![plan("basic"), plan("pro")],
        demo: None,
        connectors: Vec::new(),
        knowledge: None,
    };
    Offering::new("echo", spec)
}

/// The Instance `bot` of Project `project` in the control namespace `cmp-acme`, on Offering `echo`
/// version `1`, plan `basic` (uid `uid-1`, generation 1).
pub fn instance(project: &str) -> Instance {
    let mut i = Instance::new(
        "bot",
        InstanceSpec {
            project: project.into(),
            offering: "echo".into(),
            version: "1".into(),
            plan: "basic".into(),
            suspended: false,
            api_keys: vec![],
            connectors: vec![],
            config: Default::default(),
            deletion_policy: Default::default(),
        },
    );
    i.metadata.namespace = Some("cmp-acme".into());
    i.metadata.uid = Some("uid-1".into());
    i.metadata.generation = Some(1);
    i
}
