//! A recording [`Lxc`] for unit tests: it keeps containers in memory, records every call
//! and fails or answers the way a test scripts it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;

use super::{ContainerSpec, ExecOutput, ExecRequest, Info, Lxc, LxcError, State, StopMode};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LxcOp {
    Create,
    Start,
    Stop,
    Destroy,
    State,
    List,
    Info,
    Signal,
    Exec,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LxcCall {
    Create(ContainerSpec),
    Start(String),
    Stop(String, StopMode),
    Destroy(String),
    State(String),
    List,
    Info(String),
    Signal(String, rustix::process::Signal),
    Exec(String, ExecRequest),
}

#[derive(Debug, Default)]
struct Inner {
    calls: Vec<LxcCall>,
    containers: BTreeMap<String, (ContainerSpec, State)>,
    failures: HashMap<LxcOp, VecDeque<LxcError>>,
    exec_results: VecDeque<ExecOutput>,
    next_pid: u32,
}

#[derive(Debug, Default)]
pub struct FakeLxc {
    inner: Mutex<Inner>,
}

impl FakeLxc {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<LxcCall> {
        self.lock().calls.clone()
    }

    /// The next call of `op` fails with `error` (queued per operation).
    pub fn fail_next(&self, op: LxcOp, error: LxcError) {
        self.lock().failures.entry(op).or_default().push_back(error);
    }

    /// The next `exec` returns `output` (default: exit code 0, no output).
    pub fn push_exec_result(&self, output: ExecOutput) {
        self.lock().exec_results.push_back(output);
    }

    /// Sets a container's state as if it changed outside our control (crashed, stopped
    /// by hand).
    pub fn set_state(&self, name: &str, state: State) {
        if let Some(entry) = self.lock().containers.get_mut(name) {
            entry.1 = state;
        }
    }

    /// The spec a container was created from.
    pub fn spec(&self, name: &str) -> Option<ContainerSpec> {
        self.lock().containers.get(name).map(|(s, _)| s.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A test that panicked while holding the lock already failed; keep the data.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn enter(
        &self,
        op: LxcOp,
        call: LxcCall,
    ) -> Result<std::sync::MutexGuard<'_, Inner>, LxcError> {
        let mut inner = self.lock();
        inner.calls.push(call);
        match inner.failures.get_mut(&op).and_then(VecDeque::pop_front) {
            Some(err) => Err(err),
            None => Ok(inner),
        }
    }
}

fn not_found(name: &str) -> LxcError {
    LxcError::NotFound {
        container: name.to_owned(),
        lxcpath: "fake".into(),
    }
}

#[async_trait]
impl Lxc for FakeLxc {
    async fn create(&self, spec: &ContainerSpec) -> Result<(), LxcError> {
        let mut inner = self.enter(LxcOp::Create, LxcCall::Create(spec.clone()))?;
        if inner.containers.contains_key(&spec.name) {
            return Err(LxcError::Exists {
                container: spec.name.clone(),
                lxcpath: "fake".into(),
            });
        }
        inner
            .containers
            .insert(spec.name.clone(), (spec.clone(), State::Stopped));
        Ok(())
    }

    async fn start(&self, name: &str) -> Result<(), LxcError> {
        let mut inner = self.enter(LxcOp::Start, LxcCall::Start(name.to_owned()))?;
        let entry = inner
            .containers
            .get_mut(name)
            .ok_or_else(|| not_found(name))?;
        entry.1 = State::Running;
        Ok(())
    }

    async fn stop(&self, name: &str, mode: StopMode) -> Result<(), LxcError> {
        let mut inner = self.enter(LxcOp::Stop, LxcCall::Stop(name.to_owned(), mode))?;
        let entry = inner
            .containers
            .get_mut(name)
            .ok_or_else(|| not_found(name))?;
        entry.1 = State::Stopped;
        Ok(())
    }

    async fn destroy(&self, name: &str) -> Result<(), LxcError> {
        let mut inner = self.enter(LxcOp::Destroy, LxcCall::Destroy(name.to_owned()))?;
        inner.containers.remove(name);
        Ok(())
    }

    async fn state(&self, name: &str) -> Result<Option<State>, LxcError> {
        let inner = self.enter(LxcOp::State, LxcCall::State(name.to_owned()))?;
        Ok(inner.containers.get(name).map(|(_, s)| *s))
    }

    async fn list(&self) -> Result<Vec<String>, LxcError> {
        let inner = self.enter(LxcOp::List, LxcCall::List)?;
        Ok(inner.containers.keys().cloned().collect())
    }

    async fn info(&self, name: &str) -> Result<Info, LxcError> {
        let mut inner = self.enter(LxcOp::Info, LxcCall::Info(name.to_owned()))?;
        inner.next_pid += 1;
        let pid = 1000 + inner.next_pid;
        let (spec, state) = inner.containers.get(name).ok_or_else(|| not_found(name))?;
        let running = *state == State::Running;
        Ok(Info {
            state: Some(*state),
            pid: running.then_some(pid),
            ips: match (&spec.network, running) {
                (Some(net), true) => vec![net.address.into()],
                _ => Vec::new(),
            },
        })
    }

    async fn signal(&self, name: &str, signal: rustix::process::Signal) -> Result<(), LxcError> {
        let inner = self.enter(LxcOp::Signal, LxcCall::Signal(name.to_owned(), signal))?;
        match inner.containers.get(name) {
            Some((_, State::Running)) => Ok(()),
            Some(_) => Err(LxcError::NotRunning {
                container: name.to_owned(),
            }),
            None => Err(not_found(name)),
        }
    }

    async fn exec(&self, name: &str, request: &ExecRequest) -> Result<ExecOutput, LxcError> {
        let call = LxcCall::Exec(name.to_owned(), request.clone());
        let mut inner = self.enter(LxcOp::Exec, call)?;
        request.check().map_err(|reason| LxcError::BadExec {
            container: name.to_owned(),
            program: request.argv.first().cloned().unwrap_or_default(),
            reason,
        })?;
        if inner.containers.get(name).map(|(_, s)| *s) != Some(State::Running) {
            return Err(not_found(name));
        }
        Ok(inner.exec_results.pop_front().unwrap_or(ExecOutput {
            code: Some(0),
            ..ExecOutput::default()
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::Limits;
    use super::*;
    use crate::cmd::CommandError;

    fn spec(name: &str) -> ContainerSpec {
        ContainerSpec {
            name: name.into(),
            rootfs: "/r".into(),
            init: vec!["/init".into()],
            idmap: None,
            network: None,
            limits: Limits::default(),
            mounts: Vec::new(),
            security: Default::default(),
        }
    }

    #[tokio::test]
    async fn records_calls_and_tracks_state() {
        let fake = FakeLxc::new();
        fake.create(&spec("startos-a")).await.unwrap();
        fake.start("startos-a").await.unwrap();
        assert_eq!(fake.state("startos-a").await.unwrap(), Some(State::Running));
        fake.set_state("startos-a", State::Stopped);
        assert_eq!(fake.state("startos-a").await.unwrap(), Some(State::Stopped));
        fake.destroy("startos-a").await.unwrap();
        assert_eq!(fake.state("startos-a").await.unwrap(), None);
        assert_eq!(
            fake.calls(),
            vec![
                LxcCall::Create(spec("startos-a")),
                LxcCall::Start("startos-a".into()),
                LxcCall::State("startos-a".into()),
                LxcCall::State("startos-a".into()),
                LxcCall::Destroy("startos-a".into()),
                LxcCall::State("startos-a".into()),
            ]
        );
    }

    #[tokio::test]
    async fn scripted_failures_and_exec_results_come_back_in_order() {
        let fake = FakeLxc::new();
        fake.create(&spec("startos-a")).await.unwrap();
        fake.fail_next(
            LxcOp::Start,
            LxcError::Command {
                container: "startos-a".into(),
                source: CommandError::Timeout {
                    command: "lxc-start".into(),
                    seconds: 1,
                },
            },
        );
        assert!(fake.start("startos-a").await.is_err());
        fake.start("startos-a").await.unwrap();
        fake.push_exec_result(ExecOutput {
            code: Some(7),
            ..Default::default()
        });
        let request = ExecRequest::new(vec!["true".to_owned()], Duration::from_secs(1));
        let first = fake.exec("startos-a", &request).await;
        assert_eq!(first.unwrap().code, Some(7));
        let second = fake.exec("startos-a", &request).await;
        assert_eq!(second.unwrap().code, Some(0));
        let mut bad = request.clone();
        bad.env.insert("A=B".into(), "x".into());
        let err = fake.exec("startos-a", &bad).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "container startos-a: refusing to run `true`: environment name \"A=B\" is not [A-Za-z_][A-Za-z0-9_]*"
        );
        let mut bad = request.clone();
        bad.env.insert("A".into(), "x\0y".into());
        let err = fake.exec("startos-a", &bad).await.unwrap_err();
        assert!(
            err.to_string()
                .ends_with("environment variable A contains NUL")
        );
        let empty = ExecRequest::new(Vec::new(), Duration::from_secs(1));
        assert!(fake.exec("startos-a", &empty).await.is_err());
        let dup = fake.create(&spec("startos-a")).await.unwrap_err();
        assert!(matches!(dup, LxcError::Exists { .. }));
    }
}
