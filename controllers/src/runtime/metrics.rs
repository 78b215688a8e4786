//! Prometheus metrics of the runtime (served by startd's `/metrics`; controllers never serve
//! HTTP themselves).

use std::{sync::Arc, time::Duration};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use super::{ReconcileResult, Requeue};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    controller: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: String,
}

type HistogramFamily = Family<ControllerLabels, Histogram, fn() -> Histogram>;

#[derive(Debug)]
struct Inner {
    reconciles: Family<ResultLabels, Counter>,
    duration: HistogramFamily,
    queue_depth: Family<ControllerLabels, Gauge>,
    active: Family<ControllerLabels, Gauge>,
}

/// Cheap to clone; all clones share the same series.
#[derive(Clone, Debug)]
pub struct Metrics(Arc<Inner>);

fn buckets() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.000_5, 2.0, 20,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        Self(Arc::new(Inner {
            reconciles: Family::default(),
            duration: Family::new_with_constructor(buckets),
            queue_depth: Family::default(),
            active: Family::default(),
        }))
    }
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "startos_reconcile",
            "Reconciles by controller and result",
            self.0.reconciles.clone(),
        );
        registry.register(
            "startos_reconcile_duration_seconds",
            "Time spent in reconcile",
            self.0.duration.clone(),
        );
        registry.register(
            "startos_queue_depth",
            "Keys waiting to be reconciled",
            self.0.queue_depth.clone(),
        );
        registry.register(
            "startos_active_workers",
            "Reconciles running now",
            self.0.active.clone(),
        );
    }

    pub(crate) fn observe(&self, controller: &str, result: &ReconcileResult, took: Duration) {
        let result = match result {
            Ok(Requeue::After(_)) => "requeue_after",
            Ok(Requeue::OnChange) => "success",
            Err(e) => e.label(),
        };
        self.0
            .reconciles
            .get_or_create(&ResultLabels {
                controller: controller.to_owned(),
                result: result.to_owned(),
            })
            .inc();
        self.0
            .duration
            .get_or_create(&ControllerLabels {
                controller: controller.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    pub(crate) fn set_queue(&self, controller: &str, depth: usize, running: usize) {
        let labels = ControllerLabels {
            controller: controller.to_owned(),
        };
        self.0
            .queue_depth
            .get_or_create(&labels)
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
        self.0
            .active
            .get_or_create(&labels)
            .set(i64::try_from(running).unwrap_or(i64::MAX));
    }

    /// Total reconciles of `controller` so far (all results), for tests and benchmarks.
    pub fn reconcile_count(&self, controller: &str) -> u64 {
        [
            "success",
            "requeue_after",
            "transient",
            "terminal",
            "conflict",
        ]
        .iter()
        .map(|r| {
            self.0
                .reconciles
                .get_or_create(&ResultLabels {
                    controller: controller.to_owned(),
                    result: (*r).to_owned(),
                })
                .get()
        })
        .sum()
    }
}
