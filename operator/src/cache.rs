//! The operator's caches: one watch per kind, folded into a reflector store
//! that the reconcilers read instead of the API server, and fanned out to
//! every controller that follows the kind (the shared watch streams of
//! kube-runtime do not pass deletions on, and a deleted child must trigger
//! its parent's repair).
//!
//! Our own kinds are read through `DeserializeGuard`, so one object the
//! operator cannot read (say, a timestamp without a time zone, which the API
//! server's schema accepts) is reported on that object and does not break
//! the watch for every other object.

use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError};

use cmp_crds::names::{API_KEY_LABEL, MANAGED_BY_LABEL, OPERATOR_MANAGER, organization_of_control_namespace};
use cmp_crds::{Instance, Offering, Organization, Project, Wallet};
use futures::channel::mpsc;
use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, Secret, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ObjectMeta, PartialObjectMeta};
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::gitops::argocd::{AppProject, Application};

/// A watched kind: its store, and the controllers following its events.
pub struct Watched<K: Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    subscribers: Arc<Mutex<Vec<mpsc::UnboundedSender<K>>>>,
}

impl<K> Watched<K>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
{
    /// Starts folding `events` into a store, and returns it with the task that drives the watch.
    fn new(
        events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (store, writer) = reflector::store();
        let subscribers: Arc<Mutex<Vec<mpsc::UnboundedSender<K>>>> = Arc::default();
        let fan_out = subscribers.clone();
        let reader = store.clone();
        let kind = K::kind(&()).to_string();
        let driver = reflector::reflector(writer, events).for_each(move |event| {
            let touched: Vec<K> = match event {
                Ok(watcher::Event::Apply(object) | watcher::Event::Delete(object)) => vec![object],
                // A (re)list: the store was swapped whole; every object may have changed.
                Ok(watcher::Event::InitDone) => reader.state().iter().map(|o| K::clone(o)).collect(),
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => Vec::new(),
                Err(error) => {
                    tracing::warn!(%kind, %error, "watch failed; retrying with backoff");
                    Vec::new()
                }
            };
            if !touched.is_empty() {
                let mut subscribers = fan_out.lock().unwrap_or_else(PoisonError::into_inner);
                subscribers.retain(|s| touched.iter().all(|o| s.unbounded_send(o.clone()).is_ok()));
            }
            std::future::ready(())
        });
        (Self { store, subscribers }, driver)
    }

    /// The store.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Every object cached now.
    pub fn state(&self) -> Vec<Arc<K>> {
        self.store.state()
    }

    /// The cached object `name` in `namespace` (None for cluster-scoped kinds).
    pub fn get(&self, name: &str, namespace: Option<&str>) -> Option<Arc<K>> {
        let mut key = ObjectRef::<K>::new(name);
        if let Some(ns) = namespace {
            key = key.within(ns);
        }
        self.store.get(&key)
    }

    /// The objects this kind's watch sees from now on, starting with every
    /// object cached now (so a controller started late, as a new leader is,
    /// reconciles everything once).
    pub fn subscribe(&self) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
        let (sender, receiver) = mpsc::unbounded();
        let mut subscribers = self.subscribers.lock().unwrap_or_else(PoisonError::into_inner);
        for object in self.store.state() {
            let _ = sender.unbounded_send(K::clone(&object));
        }
        subscribers.push(sender);
        receiver.map(Ok)
    }

    /// Waits until the first list has been folded in.
    async fn ready(&self) -> anyhow::Result<()> {
        self.store.wait_until_ready().await.map_err(|e| anyhow::anyhow!("the {} cache closed: {e}", K::kind(&())))
    }
}

/// A CMP object as the operator caches it: either readable, or not (with the reason).
pub type Guarded<K> = DeserializeGuard<K>;

/// The object inside a guard, when it could be read.
pub fn valid<K>(guard: &DeserializeGuard<K>) -> Option<&K> {
    guard.0.as_ref().ok()
}

/// Whether an Organization is there for this operator.
#[derive(Debug, Clone)]
pub enum OrganizationLookup {
    /// It exists and this operator reconciles it.
    Selected(Arc<Guarded<Organization>>),
    /// It exists but does not match `--organization-selector`: another operator's.
    NotSelected,
    /// It does not exist.
    Missing,
}

/// Every cache of the operator.
pub struct Caches {
    /// Organizations matching `--organization-selector` (all without one).
    pub organizations: Watched<Guarded<Organization>>,
    /// The names of all Organizations, watched only when a selector is set,
    /// to tell "not ours" from "missing".
    pub all_organizations: Option<Watched<PartialObjectMeta<Organization>>>,
    /// Projects.
    pub projects: Watched<Guarded<Project>>,
    /// Offerings.
    pub offerings: Watched<Guarded<Offering>>,
    /// Instances.
    pub instances: Watched<Guarded<Instance>>,
    /// Wallets.
    pub wallets: Watched<Guarded<Wallet>>,
    /// Namespaces the operator manages.
    pub namespaces: Watched<Namespace>,
    /// ResourceQuotas the operator manages.
    pub quotas: Watched<ResourceQuota>,
    /// LimitRanges the operator manages.
    pub limit_ranges: Watched<LimitRange>,
    /// NetworkPolicies the operator manages.
    pub network_policies: Watched<NetworkPolicy>,
    /// ServiceAccounts the operator manages.
    pub service_accounts: Watched<ServiceAccount>,
    /// Roles the operator manages.
    pub roles: Watched<Role>,
    /// RoleBindings the operator manages.
    pub role_bindings: Watched<RoleBinding>,
    /// The Secrets holding API-key plaintexts: metadata only, so the
    /// operator never holds a plaintext in memory after issuing it.
    pub key_secrets: Watched<PartialObjectMeta<Secret>>,
    /// Dedicated runtimes' Deployments (synced by Argo CD with the operator's labels).
    pub deployments: Watched<Deployment>,
    /// Argo CD Applications of Projects, when Argo CD is configured (in its namespace).
    pub applications: Option<Watched<Application>>,
    /// Argo CD AppProjects of Projects, when Argo CD is configured.
    pub app_projects: Option<Watched<AppProject>>,
}

/// Drops what no reconciler reads before an object is cached: the field
/// managers' bookkeeping is most of a small object's size, and the operator
/// compares desired fields itself.
fn drop_managed_fields<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

fn watch<K>(
    client: &kube::Client,
    config: watcher::Config,
    tasks: &mut Vec<futures::future::BoxFuture<'static, ()>>,
) -> Watched<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    watch_api(Api::<K>::all(client.clone()), config, tasks)
}

fn watch_api<K>(
    api: Api<K>,
    config: watcher::Config,
    tasks: &mut Vec<futures::future::BoxFuture<'static, ()>>,
) -> Watched<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let events = watcher(api, config).default_backoff().modify(drop_managed_fields);
    let (watched, driver) = Watched::new(events);
    tasks.push(Box::pin(driver));
    watched
}

impl Caches {
    /// Starts every watch. The returned tasks drive them; run them for the life of the process.
    pub fn start(
        client: &kube::Client,
        settings: &crate::settings::Settings,
    ) -> (Self, Vec<futures::future::BoxFuture<'static, ()>>) {
        let organization_selector = settings.organization_selector.as_deref();
        let argocd_namespace = settings.gitops.as_ref().and_then(|g| g.argocd.as_ref()).map(|a| a.namespace.as_str());
        let mut tasks = Vec::new();
        let managed = || watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={OPERATOR_MANAGER}"));
        let every = watcher::Config::default;
        let organizations = match organization_selector {
            Some(selector) => watch(client, every().labels(selector), &mut tasks),
            None => watch(client, every(), &mut tasks),
        };
        let all_organizations = organization_selector.map(|_| {
            let names = Api::<PartialObjectMeta<Organization>>::all(client.clone());
            let events = watcher(names, every()).default_backoff().modify(drop_managed_fields);
            let (watched, driver) = Watched::new(events);
            tasks.push(Box::pin(driver));
            watched
        });
        let caches = Self {
            organizations,
            all_organizations,
            projects: watch(client, every(), &mut tasks),
            offerings: match &settings.offering_selector {
                Some(selector) => watch(client, every().labels(selector), &mut tasks),
                None => watch(client, every(), &mut tasks),
            },
            instances: watch(client, every(), &mut tasks),
            wallets: watch(client, every(), &mut tasks),
            namespaces: watch(client, managed(), &mut tasks),
            quotas: watch(client, managed(), &mut tasks),
            limit_ranges: watch(client, managed(), &mut tasks),
            network_policies: watch(client, managed(), &mut tasks),
            service_accounts: watch(client, managed(), &mut tasks),
            roles: watch(client, managed(), &mut tasks),
            role_bindings: watch(client, managed(), &mut tasks),
            key_secrets: {
                let selector = format!("{MANAGED_BY_LABEL}={OPERATOR_MANAGER},{API_KEY_LABEL}");
                let events = watcher(Api::<PartialObjectMeta<Secret>>::all(client.clone()), every().labels(&selector));
                let (watched, driver) = Watched::new(events.default_backoff().modify(drop_managed_fields));
                tasks.push(Box::pin(driver));
                watched
            },
            deployments: watch(client, managed(), &mut tasks),
            applications: argocd_namespace
                .map(|ns| watch_api(Api::namespaced(client.clone(), ns), managed(), &mut tasks)),
            app_projects: argocd_namespace
                .map(|ns| watch_api(Api::namespaced(client.clone(), ns), managed(), &mut tasks)),
        };
        (caches, tasks)
    }

    /// Waits until every cache holds its first list.
    pub async fn ready(&self) -> anyhow::Result<()> {
        self.organizations.ready().await?;
        if let Some(all) = &self.all_organizations {
            all.ready().await?;
        }
        self.projects.ready().await?;
        self.offerings.ready().await?;
        self.instances.ready().await?;
        self.wallets.ready().await?;
        self.namespaces.ready().await?;
        self.quotas.ready().await?;
        self.limit_ranges.ready().await?;
        self.network_policies.ready().await?;
        self.service_accounts.ready().await?;
        self.roles.ready().await?;
        self.role_bindings.ready().await?;
        self.deployments.ready().await?;
        if let Some(applications) = &self.applications {
            applications.ready().await?;
        }
        if let Some(app_projects) = &self.app_projects {
            app_projects.ready().await?;
        }
        self.key_secrets.ready().await
    }

    /// The Organization `name`, and whether this operator reconciles it.
    pub fn organization(&self, name: &str) -> OrganizationLookup {
        if let Some(org) = self.organizations.get(name, None) {
            return OrganizationLookup::Selected(org);
        }
        match &self.all_organizations {
            Some(all) if all.get(name, None).is_some() => OrganizationLookup::NotSelected,
            _ => OrganizationLookup::Missing,
        }
    }

    /// Whether this operator reconciles an object of a namespaced CMP kind:
    /// yes unless its namespace is the control namespace of an Organization
    /// that exists and is another operator's.
    pub fn selects_namespaced(&self, meta: &ObjectMeta) -> bool {
        let namespace = meta.namespace.as_deref().unwrap_or_default();
        match organization_of_control_namespace(namespace) {
            Some(org) => !matches!(self.organization(org), OrganizationLookup::NotSelected),
            None => true,
        }
    }

    /// The readable Projects in the control namespace `namespace`.
    pub fn projects_in(&self, namespace: &str) -> Vec<Arc<Guarded<Project>>> {
        in_namespace(&self.projects, namespace)
    }

    /// The Instances in the control namespace `namespace` (readable or not).
    pub fn instances_in(&self, namespace: &str) -> Vec<Arc<Guarded<Instance>>> {
        in_namespace(&self.instances, namespace)
    }
}

fn in_namespace<K>(watched: &Watched<K>, namespace: &str) -> Vec<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
{
    watched.state().into_iter().filter(|o| o.namespace().as_deref() == Some(namespace)).collect()
}

/// A child kind the operator applies, with the cache it is compared against.
pub trait CachedChild: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static {
    /// This kind's cache.
    fn watched(caches: &Caches) -> &Watched<Self>;
}

macro_rules! cached_child {
    ($($kind:ty => $field:ident),* $(,)?) => {
        $(impl CachedChild for $kind {
            fn watched(caches: &Caches) -> &Watched<Self> {
                &caches.$field
            }
        })*
    };
}

cached_child! {
    Namespace => namespaces,
    ResourceQuota => quotas,
    LimitRange => limit_ranges,
    NetworkPolicy => network_policies,
    ServiceAccount => service_accounts,
    Role => roles,
    RoleBinding => role_bindings,
}
