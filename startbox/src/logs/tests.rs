//! The reader on real files: a huge sparse file's tail in bounded time, links and FIFOs
//! refused, several processes merged by time into the rotated file, and a follow that
//! survives rotation (by the supervisor's own writer) and truncation.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    time::Duration,
};

use api_server::logs::{LineStream, LogLine, LogQuery, LogSource};
use container_runtime::logs::LogFile;
use controllers::layout::Layout;
use futures::StreamExt;

use super::{CUT_MARKER, DirLogs};

const TIMEOUT: Duration = Duration::from_secs(10);

fn setup() -> (tempfile::TempDir, DirLogs, PathBuf) {
    let data = tempfile::tempdir().unwrap();
    let layout = Layout::new(data.path());
    let logs = layout.container("demo").logs();
    std::fs::create_dir_all(&logs).unwrap();
    (data, DirLogs::new(layout), logs)
}

fn query(process: Option<&str>, tail: Option<usize>, follow: bool) -> LogQuery {
    LogQuery {
        process: process.map(str::to_owned),
        tail,
        follow,
    }
}

/// The next `n` lines (texts), each within the timeout.
async fn take(stream: &mut LineStream, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        let line = tokio::time::timeout(TIMEOUT, stream.next())
            .await
            .unwrap_or_else(|_| panic!("no line in time after {out:?}"))
            .expect("the stream goes on")
            .unwrap();
        out.push(line.text);
    }
    out
}

async fn all(stream: LineStream) -> Vec<LogLine> {
    tokio::time::timeout(TIMEOUT, stream.map(Result::unwrap).collect())
        .await
        .expect("the read ends")
}

fn write_lines(path: &Path, lines: &[(&str, &str)]) {
    let mut f = File::create(path).unwrap();
    for (time, text) in lines {
        writeln!(f, "{time} out {text}").unwrap();
    }
}

fn t(s: u32) -> String {
    format!("2024-01-01T00:00:{s:02}.000Z")
}

#[tokio::test]
async fn the_tail_of_a_huge_sparse_file_reads_only_its_end() {
    let (_data, source, logs) = setup();
    let file = File::create(logs.join("main.log")).unwrap();
    let size = 50u64 << 30;
    file.set_len(size).unwrap();
    let tail = format!("{} out one\n{} out two\n", t(1), t(2));
    file.write_all_at(tail.as_bytes(), size).unwrap();
    drop(file);
    let start = tokio::time::Instant::now();
    let lines = all(source
        .lines("demo", &query(None, Some(2), false))
        .await
        .unwrap())
    .await;
    let took = start.elapsed();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[1].text, "two");
    assert_eq!(lines[1].time, t(2));
    // The line before "two" runs back into 50 GiB of zeros: its end, cut.
    assert!(
        lines[0].text.contains(CUT_MARKER),
        "{:?}",
        &lines[0].text[..40]
    );
    assert!(
        took < Duration::from_secs(2),
        "{took:?} for the tail of 50 GiB"
    );
}

#[tokio::test]
async fn links_and_fifos_are_refused_with_their_path() {
    let (_data, source, logs) = setup();
    std::os::unix::fs::symlink("/etc/shadow", logs.join("main.log")).unwrap();
    assert_eq!(source.processes("demo").await.unwrap(), ["main"]);
    let e = source
        .lines("demo", &query(Some("main"), None, false))
        .await
        .err()
        .expect("a link is refused")
        .to_string();
    assert!(e.contains("main.log is a symbolic link"), "{e}");
    std::fs::remove_file(logs.join("main.log")).unwrap();

    rustix::fs::mknodat(
        rustix::fs::CWD,
        logs.join("main.log"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let e = tokio::time::timeout(TIMEOUT, source.lines("demo", &query(None, Some(10), true)))
        .await
        .expect("a fifo is never waited on")
        .err()
        .expect("a fifo is refused")
        .to_string();
    assert!(e.contains("main.log is a fifo"), "{e}");

    // A logs directory swapped for a link is not followed either.
    let run = logs.parent().unwrap();
    std::fs::remove_file(logs.join("main.log")).unwrap();
    std::fs::remove_dir(&logs).unwrap();
    std::os::unix::fs::symlink("/etc", &logs).unwrap();
    let e = source.processes("demo").await.unwrap_err().to_string();
    assert!(e.contains("symbolic link"), "{e}");
    assert!(run.exists());
    // A package never started has no logs; a name is never a path.
    assert!(source.processes("other").await.unwrap().is_empty());
    assert!(source.processes("../demo").await.is_err());
    let e = source
        .lines("demo", &query(Some("../run"), None, false))
        .await
        .err()
        .expect("a process id is never a path")
        .to_string();
    assert!(e.contains("not a process id"), "{e}");
}

#[tokio::test]
async fn several_processes_are_merged_by_time_into_the_rotated_file() {
    let (_data, source, logs) = setup();
    write_lines(&logs.join("main.log.1"), &[(&t(1), "m1"), (&t(3), "m3")]);
    write_lines(&logs.join("main.log"), &[(&t(5), "m5")]);
    write_lines(
        &logs.join("db.log"),
        &[(&t(2), "d2"), (&t(4), "d4"), (&t(6), "d6")],
    );
    assert_eq!(source.processes("demo").await.unwrap(), ["db", "main"]);
    let texts = |lines: Vec<LogLine>| -> Vec<String> {
        lines
            .into_iter()
            .map(|l| format!("{}:{}", l.process, l.text))
            .collect()
    };
    let every = all(source
        .lines("demo", &query(None, None, false))
        .await
        .unwrap())
    .await;
    assert_eq!(
        texts(every),
        ["main:m1", "db:d2", "main:m3", "db:d4", "main:m5", "db:d6"]
    );
    let last4 = all(source
        .lines("demo", &query(None, Some(4), false))
        .await
        .unwrap())
    .await;
    assert_eq!(texts(last4), ["main:m3", "db:d4", "main:m5", "db:d6"]);
    let main2 = all(source
        .lines("demo", &query(Some("main"), Some(2), false))
        .await
        .unwrap())
    .await;
    assert_eq!(texts(main2), ["main:m3", "main:m5"]);
}

#[tokio::test]
async fn a_follow_goes_on_through_rotation_and_truncation() {
    let (_data, source, logs) = setup();
    // The supervisor's own writer, rotating every few lines.
    let writer = LogFile::new(&logs, "main", 200);
    writer.line("out", b"old\n");
    let mut stream = source
        .lines("demo", &query(Some("main"), Some(1), true))
        .await
        .unwrap();
    assert_eq!(take(&mut stream, 1).await, ["old"]);
    let mut expected = Vec::new();
    for i in 0..40 {
        let text = format!("line {i}");
        writer.line("out", text.as_bytes());
        expected.push(text);
        // Read as they come, so rotations happen under a follower at every point.
        if i % 3 == 0 {
            let got = take(&mut stream, expected.len()).await;
            assert_eq!(got, expected);
            expected.clear();
        }
    }
    assert_eq!(take(&mut stream, expected.len()).await, expected);
    assert!(logs.join("main.log.1").exists(), "the writer rotated");

    // Truncated in place, then written again: read from its start.
    let quiet = LogFile::new(&logs, "other", 1 << 20);
    for i in 0..5 {
        quiet.line("out", format!("a longer line number {i}").as_bytes());
    }
    let mut other = source
        .lines("demo", &query(Some("other"), Some(0), true))
        .await
        .unwrap();
    OpenOptions::new()
        .write(true)
        .open(logs.join("other.log"))
        .unwrap()
        .set_len(0)
        .unwrap();
    quiet.line("out", b"t");
    assert_eq!(take(&mut other, 1).await, ["t"]);
}

#[tokio::test]
async fn a_follow_of_all_processes_picks_up_a_new_one() {
    let (_data, source, logs) = setup();
    write_lines(&logs.join("main.log"), &[(&t(1), "m1")]);
    let mut stream = source
        .lines("demo", &query(None, None, true))
        .await
        .unwrap();
    assert_eq!(take(&mut stream, 1).await, ["m1"]);
    let db = LogFile::new(&logs, "db", 1 << 20);
    db.line("err", b"db started");
    let line = tokio::time::timeout(TIMEOUT, stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (line.process.as_str(), line.text.as_str()),
        ("db", "db started")
    );
}

#[tokio::test]
async fn many_follows_share_one_watch_and_release_it() {
    let (_data, source, logs) = setup();
    let writer = LogFile::new(&logs, "main", 1 << 20);
    // More than the default 128 inotify instances a user may have.
    let mut follows = Vec::new();
    for _ in 0..300 {
        follows.push(
            source
                .lines("demo", &query(Some("main"), Some(0), true))
                .await
                .unwrap(),
        );
    }
    writer.line("out", b"to all");
    for f in &mut follows {
        assert_eq!(take(f, 1).await, ["to all"]);
    }
    assert_eq!(source.watched_dirs(), 1);
    drop(follows);
    // The readers notice their clients are gone on their own tasks; no event says when.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while source.watched_dirs() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the watch is kept");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
