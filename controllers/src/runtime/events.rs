//! Events: what happened to an object, for `describe` and the UI. Repeats of the same
//! (object, type, reason, message, controller) fold into one `Event` whose count and last
//! timestamp grow, so a retry loop makes one line, not thousands of objects.

use std::sync::Arc;

use crds::{
    Object, ObjectMeta, OwnerReference, Resource, kind_by_name,
    kinds::{EventSpec, EventType, ObjectRef},
};
use store::{Clock, Store, StoreError, WriteOptions};

#[derive(Clone, Debug)]
pub struct Recorder {
    store: Arc<dyn Store>,
    controller: &'static str,
    clock: Clock,
}

/// The name of the series: readable prefix, hash of the folding key.
pub fn series_name(
    obj: &Object,
    type_: EventType,
    reason: &str,
    message: &str,
    controller: &str,
) -> String {
    let t = match type_ {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    };
    let hash = crds::name::stable_hash(&[
        &obj.kind,
        obj.name(),
        obj.metadata.uid.as_deref().unwrap_or(""),
        t,
        reason,
        message,
        controller,
    ]);
    let mut prefix = format!("{}-{}", obj.kind.to_ascii_lowercase(), obj.name());
    prefix.truncate(crds::name::MAX_NAME_LEN - 9);
    format!("{}-{hash:08x}", prefix.trim_end_matches('-'))
}

impl Recorder {
    pub fn new(store: Arc<dyn Store>, controller: &'static str, clock: Clock) -> Self {
        Self {
            store,
            controller,
            clock,
        }
    }

    /// Records an event about `obj` (folded into its series).
    pub async fn publish(
        &self,
        obj: &Object,
        type_: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), StoreError> {
        let events = kind_by_name("Event").ok_or_else(|| {
            StoreError::Internal("the Event kind is missing from the kind table".into())
        })?;
        let name = series_name(obj, type_, reason, message, self.controller);
        let now = self.clock.now();
        for _ in 0..3 {
            match self.store.get(events, &name).await {
                Ok(existing) => {
                    let mut ev = Resource::<EventSpec>::from_object(&existing)
                        .map_err(|e| StoreError::invalid("Event", &name, e))?;
                    ev.spec.count = ev.spec.count.saturating_add(1);
                    ev.spec.last_timestamp = now;
                    match self
                        .store
                        .update(ev.to_object(), &WriteOptions::default())
                        .await
                    {
                        Err(StoreError::Conflict { .. }) => continue,
                        other => return other.map(drop),
                    }
                }
                Err(StoreError::NotFound { .. }) => {
                    let mut meta = ObjectMeta::named(name.clone());
                    // Owned by the object: events go when it goes.
                    if let Some(uid) = &obj.metadata.uid {
                        meta.owner_references.push(OwnerReference {
                            api_version: crds::API_VERSION.into(),
                            kind: obj.kind.clone(),
                            name: obj.name().to_owned(),
                            uid: uid.clone(),
                            controller: false,
                            block_owner_deletion: false,
                        });
                    }
                    let spec = EventSpec {
                        involved_object: ObjectRef {
                            kind: obj.kind.clone(),
                            name: obj.name().to_owned(),
                            uid: obj.metadata.uid.clone(),
                        },
                        type_,
                        reason: reason.to_owned(),
                        message: message.to_owned(),
                        reporting_controller: self.controller.to_owned(),
                        count: 1,
                        first_timestamp: now,
                        last_timestamp: now,
                    };
                    match self
                        .store
                        .create(
                            Resource {
                                metadata: meta,
                                spec,
                                status: None,
                            }
                            .to_object(),
                            &WriteOptions::default(),
                        )
                        .await
                    {
                        Err(StoreError::AlreadyExists { .. }) => continue,
                        other => return other.map(drop),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::conflict(
            "Event",
            &name,
            "the event series kept changing",
        ))
    }
}
