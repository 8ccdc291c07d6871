//! Applies and deletes a Project's Argo CD AppProject and Application
//! (server-side apply, compared with their caches first).

use kube::api::{Api, DeleteParams};

use crate::apply::encode;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::gitops::argocd::{AppProject, Application, ProjectApps};

/// Ensures the AppProject, then the Application that names it.
pub async fn ensure(ctx: &Context, apps: &ProjectApps) -> Result<()> {
    let applier = &ctx.applier;
    let manager = cmp_crds::names::OPERATOR_MANAGER;
    let namespace = apps.application.metadata.namespace.clone().unwrap_or_default();
    let name = apps.application.metadata.name.clone().unwrap_or_default();
    let live_project = ctx.caches.app_projects.as_ref().and_then(|c| c.get(&name, Some(&namespace)));
    let live_project = live_project.map(|l| encode(&*l)).transpose()?;
    let projects = Api::<AppProject>::namespaced(applier.client().clone(), &namespace);
    applier.apply_if_changed(&projects, &name, &encode(&apps.app_project)?, live_project.as_ref(), manager).await?;
    let live_app = ctx.caches.applications.as_ref().and_then(|c| c.get(&name, Some(&namespace)));
    let live_app = live_app.map(|l| encode(&*l)).transpose()?;
    let applications = Api::<Application>::namespaced(applier.client().clone(), &namespace);
    applier.apply_if_changed(&applications, &name, &encode(&apps.application)?, live_app.as_ref(), manager).await?;
    Ok(())
}

/// Deletes the Application, then its AppProject; what is gone is fine.
pub async fn delete(ctx: &Context, namespace: &str, name: &str) -> Result<()> {
    let client = ctx.applier.client().clone();
    let gone = |r: Result<(), kube::Error>, what: &str| match r {
        Ok(()) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(Error::kube(format!("deleting the Argo CD {what} {namespace}/{name}"))(e)),
    };
    let applications = Api::<Application>::namespaced(client.clone(), namespace);
    gone(applications.delete(name, &DeleteParams::default()).await.map(|_| ()), "Application")?;
    let projects = Api::<AppProject>::namespaced(client, namespace);
    gone(projects.delete(name, &DeleteParams::default()).await.map(|_| ()), "AppProject")
}
