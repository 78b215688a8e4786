//! The **validity** controller: every object shows whether it is valid, and every user object
//! sums up what the other controllers report in two conditions people (and `start-cli wait`)
//! can rely on.
//!
//! - `Valid` on every object of every kind (secrets too: their status holds nothing
//!   secret). The store only admits objects that pass their kind's schema, so an object it
//!   holds is `Valid=True` (reason `Valid`) — unless the GitOps sync found its file in
//!   `desired/` broken: then the store keeps the last good spec and writes `Valid=False`
//!   (reason `InvalidFile`, the file, line and column), which this controller keeps as it is.
//! - For user kinds only:
//!   - `Reconciling=True` while some condition written by another controller was computed
//!     from an older `metadata.generation` than the current one (its `observedGeneration`
//!     is lower), or while the object is being deleted (the message lists the finalizers
//!     it waits on); `Reconciling=False` otherwise.
//!   - `Ready` follows the kind's own controller, kstatus-style: each kind declares as data
//!     ([`crds::condition::Readiness`], `KindInfo::readiness`) which controller acts on it
//!     and which of that controller's conditions must be `True`. `Ready=True` only when the
//!     object is valid, nothing is reconciling, nothing is stalled, no other condition
//!     reports a failure and every required condition is `True`. A failure is a condition
//!     with status `False` (or `Unknown`: not known to be fine) other than the ones with
//!     negative polarity ([`crds::condition::NEGATIVE_POLARITY`]: `Stalled`, `Reconciling`,
//!     `TasksPending`), whose `True` is the bad state. A kind no controller acts on yet, or
//!     an object whose controller has not reported a required condition, is
//!     `Ready=Unknown` (reason `NotReconciled`): storing an object is not doing what it asks.
//!     The message says what holds it back.
//! - `status.observedGeneration` is set to `metadata.generation`.
//!
//! Storm safety (every status write is a change that wakes every watcher): the conditions are computed from the object alone,
//! `lastTransitionTime` moves only when a status flips, and the status is written only when
//! it changed. So the reconcile that follows this controller's own write computes the same
//! status and writes nothing: one change costs at most two reconciles (the storm test in
//! `tests/controllers.rs` holds it to that).
//!
//! `Stalled` is left out of the `Reconciling` check: the runtime writes it only when it
//! flips, so its `observedGeneration` says when it last flipped, not whether the latest
//! spec was seen.

use std::sync::Arc;

use async_trait::async_trait;
use crds::{
    Condition, ConditionStatus, KindClass, KindInfo, Object, Time,
    condition::{NEGATIVE_POLARITY, Readiness, find_condition, reasons, types},
    kind_by_name,
};
use serde_json::Value;
use store::Store;

use crate::runtime::{
    Config, Context, Controller, ReconcileError, ReconcileResult, Reconciler, Requeue,
    update_conditions,
};

/// The name in logs, metrics and `Stalled` messages.
pub const NAME: &str = "validity";

/// The conditions this controller writes (all others are someone else's).
const OWN: &[&str] = &[types::VALID, types::RECONCILING, types::READY];

/// The reconciler. Cheap: it reads nothing but the object and writes only its status. The
/// time in `lastTransitionTime` is the controller's clock ([`Context::clock`]).
#[derive(Clone, Debug, Default)]
pub struct Validity;

/// The controller over every kind.
pub fn controller(store: Arc<dyn Store>) -> Controller {
    let kinds: Vec<_> = crds::kinds().iter().collect();
    Controller::for_kinds(NAME, &kinds, store).config(Config::store_only())
}

#[async_trait]
impl Reconciler for Validity {
    async fn reconcile(&self, obj: Arc<Object>, ctx: &Context) -> ReconcileResult {
        let Some(kind) = kind_by_name(&obj.kind) else {
            return Err(ReconcileError::Terminal(format!(
                "{} has an unknown kind",
                obj.key()
            )));
        };
        let conditions = summarize(&obj, kind, ctx.clock.now());
        // observedGeneration and the conditions go out in one write.
        let mut target = (*obj).clone();
        set_observed_generation(&mut target);
        let generation_moved = target.status != obj.status;
        if update_conditions(&*ctx.store, &target, &conditions)
            .await?
            .is_none()
            && generation_moved
        {
            ctx.store
                .update_status(target, &store::WriteOptions::default())
                .await?;
        }
        Ok(Requeue::OnChange)
    }
}

fn set_observed_generation(obj: &mut Object) {
    let generation = obj.metadata.generation;
    let status = obj
        .status
        .get_or_insert_with(|| Value::Object(Default::default()));
    if !status.is_object() {
        *status = Value::Object(Default::default());
    }
    if let Value::Object(map) = status {
        match generation {
            Some(g) => {
                map.insert("observedGeneration".into(), g.into());
            }
            None => {
                map.remove("observedGeneration");
            }
        }
    }
}

/// The conditions this controller wants on `obj` (of `kind`), computed at `now`.
/// Pure: the same object always gives the same answer, except for `lastTransitionTime`,
/// which [`crds::set_condition`] keeps unless a status flips.
pub fn summarize(obj: &Object, kind: &KindInfo, now: Time) -> Vec<Condition> {
    let class = kind.class;
    let generation = obj.metadata.generation;
    let cond = |type_: &str, status: ConditionStatus, reason: &str, message: String| {
        Condition::new(type_, status, reason, message, now).with_generation(generation)
    };
    let existing = obj.conditions();
    let mut out = Vec::new();
    // A Valid=False (the store's, for a broken file) stays as it is.
    let valid = match find_condition(&existing, types::VALID) {
        Some(c) if c.status == ConditionStatus::False => c.clone(),
        _ => {
            let c = cond(
                types::VALID,
                ConditionStatus::True,
                reasons::VALID,
                String::new(),
            );
            out.push(c.clone());
            c
        }
    };
    if class != KindClass::User {
        return out;
    }
    let others: Vec<&Condition> = existing
        .iter()
        .filter(|c| !OWN.contains(&c.type_.as_str()))
        .collect();
    let reconciling = reconciling(obj, &others);
    out.push(match &reconciling {
        Some((reason, message)) => cond(
            types::RECONCILING,
            ConditionStatus::True,
            reason,
            message.clone(),
        ),
        None => cond(
            types::RECONCILING,
            ConditionStatus::False,
            reasons::UP_TO_DATE,
            "every condition reflects the current generation".into(),
        ),
    });
    let (status, reason, message) = ready(&kind.readiness, kind.kind, &valid, reconciling, &others);
    out.push(cond(types::READY, status, reason, message));
    out
}

/// Why `obj` is reconciling (reason and message), if it is: being deleted, or some other
/// controller's condition lags the generation.
fn reconciling(obj: &Object, others: &[&Condition]) -> Option<(&'static str, String)> {
    let meta = &obj.metadata;
    let generation = meta.generation;
    let stale: Vec<&str> = others
        .iter()
        .filter(|c| c.type_ != types::STALLED)
        .filter(
            |c| matches!((c.observed_generation, generation), (Some(seen), Some(g)) if seen < g),
        )
        .map(|c| c.type_.as_str())
        .collect();
    if meta.is_deleting() {
        let waiting = if meta.finalizers.is_empty() {
            "being deleted".to_owned()
        } else {
            format!(
                "being deleted; waiting on finalizers: {}",
                meta.finalizers.join(", ")
            )
        };
        Some((reasons::DELETING, waiting))
    } else if !stale.is_empty() {
        Some((
            reasons::PROGRESSING,
            format!(
                "generation {} not yet observed by: {}",
                generation.unwrap_or_default(),
                stale.join(", ")
            ),
        ))
    } else {
        None
    }
}

/// The `Ready` status, reason and message: the first thing that holds it back, in order
/// invalid, reconciling, stalled, no controller, failing conditions, required conditions
/// not reported yet.
fn ready(
    readiness: &Readiness,
    kind: &str,
    valid: &Condition,
    reconciling: Option<(&'static str, String)>,
    others: &[&Condition],
) -> (ConditionStatus, &'static str, String) {
    let stalled = others
        .iter()
        .find(|c| c.type_ == types::STALLED && c.status == ConditionStatus::True);
    let failures: Vec<String> = others
        .iter()
        .filter(|c| !NEGATIVE_POLARITY.contains(&c.type_.as_str()))
        .filter(|c| c.status != ConditionStatus::True)
        .map(|c| describe_failure(c))
        .collect();
    let unreported: Vec<&str> = readiness
        .requires
        .iter()
        .copied()
        .filter(|t| !others.iter().any(|c| c.type_ == *t))
        .collect();
    let not_ready = ConditionStatus::False;
    if valid.status != ConditionStatus::True {
        (
            not_ready,
            reasons::INVALID,
            format!("not valid: {}", valid.message),
        )
    } else if let Some((reason, message)) = reconciling {
        (not_ready, reason, message)
    } else if let Some(s) = stalled {
        (
            not_ready,
            reasons::STALLED,
            format!("stalled: {}", s.message),
        )
    } else if readiness.controller.is_none() {
        (
            ConditionStatus::Unknown,
            reasons::NOT_RECONCILED,
            format!("no controller acts on {kind} objects yet: stored and valid, nothing done"),
        )
    } else if !failures.is_empty() {
        (not_ready, reasons::NOT_READY, failures.join("; "))
    } else if !unreported.is_empty() {
        (
            ConditionStatus::Unknown,
            reasons::NOT_RECONCILED,
            format!(
                "waiting for the {} controller to report {}",
                readiness.controller.unwrap_or_default(),
                unreported.join(", ")
            ),
        )
    } else {
        let required = if readiness.requires.is_empty() {
            String::new()
        } else {
            format!(", {} True", readiness.requires.join(", "))
        };
        (
            ConditionStatus::True,
            reasons::READY,
            format!("valid, up to date{required}, and no condition reports a failure"),
        )
    }
}

fn describe_failure(c: &Condition) -> String {
    let status = match c.status {
        ConditionStatus::False => "False",
        _ => "Unknown",
    };
    if c.message.is_empty() {
        format!("{} is {status} ({})", c.type_, c.reason)
    } else {
        format!("{} is {status} ({}): {}", c.type_, c.reason, c.message)
    }
}
