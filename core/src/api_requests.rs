//! Counts the requests a binary sends to the Kubernetes API server, by HTTP
//! method and whether they are watches, through a layer in the client's
//! service stack: every read is counted, whichever code path made it.

use anyhow::Context as _;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Labels of an API request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `GET`, `POST`, `PATCH`, `PUT` or `DELETE`.
    pub method: String,
    /// `true` for a watch (a long-lived GET), else `false`.
    pub watch: String,
}

/// The request counter, shared by every client of the process.
#[derive(Clone, Default)]
pub struct ApiRequests {
    requests: Family<RequestLabels, Counter>,
}

impl ApiRequests {
    /// Registers the counter as `<prefix>_api_requests_total`.
    pub fn register(registry: &mut Registry) -> Self {
        let this = Self::default();
        registry.register(
            "api_requests",
            "Requests sent to the Kubernetes API server, per method; watch=\"true\" for watches",
            this.requests.clone(),
        );
        this
    }

    /// Counts one request.
    pub fn count<B>(&self, request: &http::Request<B>) {
        let watch = request.uri().query().is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
        let labels = RequestLabels { method: request.method().to_string(), watch: watch.to_string() };
        self.requests.get_or_create(&labels).inc();
    }

    /// A client from the environment (KUBECONFIG or the in-cluster config) whose requests are counted.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        crate::tls::install_crypto_provider();
        let config =
            kube::Config::infer().await.context("connecting to the cluster (KUBECONFIG or in-cluster config)")?;
        let counter = self.clone();
        let layer = tower::util::MapRequestLayer::new(move |request: http::Request<kube::client::Body>| {
            counter.count(&request);
            request
        });
        let builder = kube::client::ClientBuilder::try_from(config)
            .context("connecting to the cluster (KUBECONFIG or in-cluster config)")?;
        Ok(builder.with_layer(&layer).build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, uri: &str) -> http::Request<()> {
        http::Request::builder().method(method).uri(uri).body(()).expect("request")
    }

    #[test]
    fn reads_writes_and_watches_are_told_apart() {
        let mut registry = Registry::with_prefix("t");
        let counter = ApiRequests::register(&mut registry);
        counter.count(&request("GET", "/api/v1/namespaces/a"));
        counter.count(&request("GET", "/api/v1/namespaces?labelSelector=x"));
        counter.count(&request("GET", "/api/v1/namespaces?watch=true&resourceVersion=1"));
        counter.count(&request("PATCH", "/api/v1/namespaces/a?fieldManager=m"));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(text.contains("t_api_requests_total{method=\"GET\",watch=\"false\"} 2"), "{text}");
        assert!(text.contains("t_api_requests_total{method=\"GET\",watch=\"true\"} 1"), "{text}");
        assert!(text.contains("t_api_requests_total{method=\"PATCH\",watch=\"false\"} 1"), "{text}");
    }
}
