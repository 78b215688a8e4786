//! `start-cli get KIND [NAME] [-o yaml|json|wide|name] [-l selector] [-w]`.

use std::{future::Future, io::Write};

use anyhow::{Context, Result};
use clap::Args;
use crds::{KindInfo, LabelSelector, Object};
use futures::StreamExt;
use store::{EventType, Store, StoreError};

use super::{
    output::{self, OutputFormat, reference},
    resolve_kind,
};

#[derive(Debug, Args)]
pub struct GetArgs {
    /// Kind: plural, singular, short name or CamelCase, any case (`packages`, `pkg`, `Package`).
    pub kind: String,
    /// One object; all objects of the kind when omitted.
    pub name: Option<String>,
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<OutputFormat>,
    /// Label selector: `key=value,key!=value,key,!key,key in (a,b),key notin (a,b)`.
    #[arg(short = 'l', long)]
    pub selector: Option<LabelSelector>,
    /// After listing, stream changes until interrupted.
    #[arg(short = 'w', long)]
    pub watch: bool,
}

/// The objects `get` shows, and the revision they were read at.
pub async fn fetch(
    store: &dyn Store,
    kind: &'static KindInfo,
    name: Option<&str>,
    selector: Option<&LabelSelector>,
) -> Result<(Vec<Object>, String)> {
    let (mut items, rv) = match name {
        Some(name) => {
            let obj = store.get(kind, name).await?;
            let rv = obj.metadata.resource_version.clone().unwrap_or_default();
            (vec![obj], rv)
        }
        None => {
            let list = store.list(kind).await?;
            (list.items, list.resource_version)
        }
    };
    if let Some(sel) = selector {
        items.retain(|o| sel.matches(&o.metadata.labels));
    }
    items.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    Ok((items, rv))
}

/// Prints `items` in `format`; a single named object prints as itself in YAML/JSON, a list as
/// a `<Kind>List`.
pub fn print(
    out: &mut dyn Write,
    kind: &KindInfo,
    items: &[Object],
    rv: &str,
    single: bool,
    format: Option<OutputFormat>,
) -> Result<()> {
    match format {
        None | Some(OutputFormat::Wide) => {
            out.write_all(
                output::table(
                    kind,
                    items,
                    format == Some(OutputFormat::Wide),
                    output::now(),
                )
                .as_bytes(),
            )?;
        }
        Some(OutputFormat::Name) => {
            for o in items {
                writeln!(out, "{}", reference(kind, &o.metadata.name))?;
            }
        }
        Some(OutputFormat::Yaml) if single => output::write_yaml(out, &items[0])?,
        Some(OutputFormat::Json) if single => output::write_json(out, &items[0])?,
        Some(OutputFormat::Yaml) => {
            output::write_yaml(out, &output::list_document(kind, items, rv))?
        }
        Some(OutputFormat::Json) => {
            output::write_json(out, &output::list_document(kind, items, rv))?
        }
    }
    Ok(())
}

pub async fn run(
    store: &dyn Store,
    args: &GetArgs,
    out: &mut (dyn Write + Send),
    interrupted: impl Future<Output = ()> + Send,
) -> Result<u8> {
    let kind = resolve_kind(&args.kind)?;
    let (items, rv) = match fetch(store, kind, args.name.as_deref(), args.selector.as_ref()).await {
        Err(e)
            if args.watch
                && args.name.is_some()
                && e.downcast_ref::<StoreError>()
                    .is_some_and(StoreError::is_not_found) =>
        {
            // Watching a name that does not exist yet: wait for it to appear.
            (Vec::new(), store.list(kind).await?.resource_version)
        }
        r => r?,
    };
    if items.is_empty() && !args.watch {
        eprintln!("No resources found.");
        return Ok(0);
    }
    let single = args.name.is_some() && !args.watch;
    if !items.is_empty()
        || args
            .output
            .is_some_and(|f| matches!(f, OutputFormat::Json | OutputFormat::Yaml))
    {
        if args.watch {
            print_watch_initial(out, kind, &items, args.output)?;
        } else {
            print(out, kind, &items, &rv, single, args.output)?;
        }
    }
    out.flush()?;
    if args.watch {
        tokio::select! {
            r = watch(store, kind, args, rv, out, items.is_empty()) => r?,
            () = interrupted => {}
        }
    }
    Ok(0)
}

fn print_watch_initial(
    out: &mut dyn Write,
    kind: &KindInfo,
    items: &[Object],
    format: Option<OutputFormat>,
) -> Result<()> {
    match format {
        None | Some(OutputFormat::Wide) | Some(OutputFormat::Name) => {
            print(out, kind, items, "", false, format)
        }
        Some(_) => {
            for o in items {
                print_event(out, kind, EventType::Added, o, format, false)?;
            }
            Ok(())
        }
    }
}

/// One watch event: a table row (without header), `kind/name`, a YAML document, or a JSON
/// line `{"type": "MODIFIED", "object": {...}}`.
fn print_event(
    out: &mut dyn Write,
    kind: &KindInfo,
    type_: EventType,
    obj: &Object,
    format: Option<OutputFormat>,
    header: bool,
) -> Result<()> {
    match format {
        None | Some(OutputFormat::Wide) => {
            let wide = format == Some(OutputFormat::Wide);
            let mut shown = obj.clone();
            let mut t = output::Table::new(output::headers(kind, wide));
            if type_ == EventType::Deleted {
                shown.metadata.name.push_str(" (deleted)");
            }
            t.push(output::row(kind, &shown, wide, output::now()));
            let text = t.render();
            let text = if header {
                text.as_str()
            } else {
                text.split_once('\n').map_or("", |(_, rows)| rows)
            };
            out.write_all(text.as_bytes())?;
        }
        Some(OutputFormat::Name) => writeln!(out, "{}", reference(kind, &obj.metadata.name))?,
        Some(OutputFormat::Yaml) => {
            out.write_all(b"---\n")?;
            output::write_yaml(out, obj)?;
        }
        Some(OutputFormat::Json) => {
            serde_json::to_writer(
                &mut *out,
                &serde_json::json!({"type": type_, "object": obj}),
            )?;
            out.write_all(b"\n")?;
        }
    }
    out.flush().context("writing to stdout")?;
    Ok(())
}

async fn watch(
    store: &dyn Store,
    kind: &'static KindInfo,
    args: &GetArgs,
    mut rv: String,
    out: &mut (dyn Write + Send),
    mut need_header: bool,
) -> Result<()> {
    let shown = |obj: &Object| {
        args.name.as_ref().is_none_or(|n| *n == obj.metadata.name)
            && args
                .selector
                .as_ref()
                .is_none_or(|s| s.matches(&obj.metadata.labels))
    };
    loop {
        let mut stream = match store.watch(Some(kind), Some(&rv)).await {
            Err(StoreError::Gone { .. }) => {
                // Never a silent restart: say so, list again and go on from there.
                eprintln!("watch expired (the server restarted or fell behind); listing again");
                let (items, new_rv) = fetch(store, kind, None, None).await?;
                for o in items.iter().filter(|o| shown(o)) {
                    print_event(out, kind, EventType::Added, o, args.output, need_header)?;
                    need_header = false;
                }
                rv = new_rv;
                continue;
            }
            r => r?,
        };
        // A stream that ends (server-side timeout) or expires is resumed from the last
        // revision seen; an expired one is then answered with Gone above.
        while let Some(event) = stream.next().await {
            let event = match event {
                Err(StoreError::Gone { .. }) => break,
                r => r?,
            };
            if let Some(v) = &event.object.metadata.resource_version {
                rv.clone_from(v);
            }
            if event.type_ == EventType::Bookmark || !shown(&event.object) {
                continue;
            }
            print_event(
                out,
                kind,
                event.type_,
                &event.object,
                args.output,
                need_header,
            )?;
            need_header = false;
        }
    }
}
