//! Reading a watch answer: one JSON event per line, bounded in length.

use std::sync::Arc;

use crds::Object;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::Value;
use store::{EventType, Result, StoreError, WatchEvent};

use crate::{
    AbortOnDrop, decode,
    status::{Context, WireStatus, from_status},
};

/// A watch line longer than this is refused (objects are far smaller).
const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// One parsed line of a watch stream.
#[derive(Deserialize)]
struct WireEvent {
    #[serde(rename = "type")]
    type_: String,
    #[serde(default)]
    object: Value,
}

fn parse_event(line: &[u8], ctx: &Context) -> Result<WatchEvent> {
    let wire: WireEvent = decode(line, "watch event")?;
    let type_ = match wire.type_.as_str() {
        "ADDED" => EventType::Added,
        "MODIFIED" => EventType::Modified,
        "DELETED" => EventType::Deleted,
        "BOOKMARK" => EventType::Bookmark,
        "ERROR" => {
            return Err(match serde_json::from_value::<WireStatus>(wire.object) {
                Ok(status) => from_status(status, ctx),
                Err(e) => {
                    StoreError::Unavailable(format!("the server sent a malformed watch error: {e}"))
                }
            });
        }
        other => {
            return Err(StoreError::Unavailable(format!(
                "the server sent an unknown watch event type {other:?}"
            )));
        }
    };
    let object: Object = serde_json::from_value(wire.object).map_err(|e| {
        StoreError::Unavailable(format!("the server sent a malformed watch object: {e}"))
    })?;
    Ok(WatchEvent {
        type_,
        object: Arc::new(object),
    })
}

/// The state of one watch answer being read.
pub(crate) struct EventLines {
    pub body: Incoming,
    pub buf: Vec<u8>,
    pub ctx: Context,
    pub done: bool,
    pub _conn: AbortOnDrop,
}

pub(crate) async fn next_event(mut st: EventLines) -> Option<(Result<WatchEvent>, EventLines)> {
    loop {
        if st.done {
            return None;
        }
        if let Some(pos) = st.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = st.buf.drain(..=pos).collect();
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let ev = parse_event(&line, &st.ctx);
            // An ERROR event (or a line we cannot read) ends the watch.
            st.done = ev.is_err();
            return Some((ev, st));
        }
        if st.buf.len() > MAX_LINE_BYTES {
            st.done = true;
            return Some((
                Err(StoreError::Unavailable(
                    "the server sent a watch event larger than 16 MiB".into(),
                )),
                st,
            ));
        }
        match st.body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    st.buf.extend_from_slice(&data);
                }
            }
            Some(Err(e)) => {
                st.done = true;
                return Some((
                    Err(StoreError::Unavailable(format!(
                        "the watch stream broke: {e}"
                    ))),
                    st,
                ));
            }
            None => {
                st.done = true;
                if st.buf.iter().all(u8::is_ascii_whitespace) {
                    return None;
                }
                let line = std::mem::take(&mut st.buf);
                return Some((parse_event(&line, &st.ctx), st));
            }
        }
    }
}
