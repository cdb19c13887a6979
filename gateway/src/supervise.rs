//! The task tree of a running gateway: every long-lived task is spawned here under a name and a
//! [`Stage`], watched while it runs, and stopped stage by stage in shutdown order.
//!
//! Owns the rule "no task ends unnoticed" (docs/ARCHITECTURE.md §Task tree): every task of a
//! gateway runs until it is told to stop. One that ends on its own (returns or panics) before
//! shutdown is a failure: [`TaskTree::watch`] reports it, the caller stops the rest in order
//! (sources first, so the engine can commit what it holds; sinks last), and the process exits
//! non-zero so that systemd restarts it. It does not own what a task does, nor the signals that
//! start a shutdown.

use std::collections::HashMap;
use std::future::Future;

use tokio::task::{Id, JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::error;

/// The stages of the tree, in shutdown order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// Modbus pollers and MQTT subscribers: stopped first, so nothing new arrives.
    Sources,
    /// The engine: ends by itself once every source has gone, after its final commit.
    Engine,
    /// The sinks: what they have not delivered stays in the spool.
    Sinks,
    /// The console: stopped last, so `/metrics` and `/readyz` answer during the shutdown.
    Console,
}

/// A task that ended when it was not asked to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("task {name} ({stage:?}) {how}")]
pub struct TaskFailure {
    /// The task's name (`poller tcp:…`, `mqtt source site-nodes`, `engine`, `sink influxdb`).
    pub name: String,
    /// Its stage.
    pub stage: Stage,
    /// "panicked: …" or "ended unexpectedly".
    pub how: String,
}

/// Named tasks grouped by stage, each stage with its own stop token.
#[derive(Debug)]
pub struct TaskTree {
    tasks: JoinSet<()>,
    names: HashMap<Id, (Stage, String)>,
    stops: HashMap<Stage, CancellationToken>,
}

impl Default for TaskTree {
    fn default() -> Self {
        Self::new()
    }
}

impl TaskTree {
    /// An empty tree.
    #[must_use]
    pub fn new() -> Self {
        Self {
            tasks: JoinSet::new(),
            names: HashMap::new(),
            stops: HashMap::new(),
        }
    }

    /// The token that stops `stage` (the engine has none of its own: it stops when its input
    /// closes, after the sources have gone).
    #[must_use]
    pub fn stop_token(&mut self, stage: Stage) -> CancellationToken {
        self.stops.entry(stage).or_default().clone()
    }

    /// Spawn `task` as `name` in `stage`.
    ///
    /// Boxed: every task of the tree is then one future type to tokio, whose task machinery
    /// (poll, harness, shutdown: about 1.4 KB of code each on aarch64) is built once instead of
    /// once per component (README §Building for the site boxes, Size against the 7 MB target).
    /// One allocation per task started.
    pub fn spawn(
        &mut self,
        stage: Stage,
        name: impl Into<String>,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        let task: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(task);
        let handle = self.tasks.spawn(task);
        self.names.insert(handle.id(), (stage, name.into()));
    }

    /// Wait until `shutdown` is cancelled (`None`) or a task ends on its own (its failure).
    pub async fn watch(&mut self, shutdown: &CancellationToken) -> Option<TaskFailure> {
        if self.tasks.is_empty() {
            shutdown.cancelled().await;
            return None;
        }
        tokio::select! {
            biased;
            () = shutdown.cancelled() => None,
            Some(ended) = self.tasks.join_next_with_id() => Some(self.failure(ended)),
        }
    }

    /// Wait until the tasks named `names` have ended (their stop tokens were cancelled by the
    /// caller: a reload stopping the components it replaces). Returns the failures met on the
    /// way: one of them panicking, or any other task ending meanwhile, which is a failure as in
    /// [`TaskTree::watch`].
    pub async fn retire(&mut self, names: &[String]) -> Vec<TaskFailure> {
        let mut failures = Vec::new();
        while self.names.values().any(|(_, n)| names.contains(n)) {
            let Some(ended) = self.tasks.join_next_with_id().await else {
                break;
            };
            let returned = ended.is_ok();
            let failure = self.failure(ended);
            if !(returned && names.contains(&failure.name)) {
                failures.push(failure);
            }
        }
        failures
    }

    /// Stop every stage in order, waiting for each to finish before the next: sources, then
    /// the engine (which drains and commits), then the sinks, then the console. Returns every
    /// task that failed on the way (panicked, or the engine ending before being asked).
    pub async fn shutdown(mut self) -> Vec<TaskFailure> {
        let mut failures = Vec::new();
        for stage in [Stage::Sources, Stage::Engine, Stage::Sinks, Stage::Console] {
            if let Some(stop) = self.stops.get(&stage) {
                stop.cancel();
            }
            while self.names.values().any(|(s, _)| *s == stage) {
                let Some(ended) = self.tasks.join_next_with_id().await else {
                    break;
                };
                let id = match &ended {
                    Ok((id, ())) => *id,
                    Err(e) => e.id(),
                };
                let returned = ended.is_ok();
                let task_stage = self.names.get(&id).map_or(stage, |(s, _)| *s);
                let failure = self.failure(ended);
                // Returning after its stop is the normal end; the engine's stop is the sources
                // going away, which happens during this loop's first stage.
                if !(returned && (task_stage <= stage || task_stage == Stage::Engine)) {
                    error!(task = %failure.name, stage = ?failure.stage, how = %failure.how,
                           "Task failed during shutdown.");
                    failures.push(failure);
                }
            }
        }
        failures
    }

    /// Name and describe a task that ended, and forget it.
    fn failure(&mut self, ended: Result<(Id, ()), JoinError>) -> TaskFailure {
        let (id, how) = match ended {
            Ok((id, ())) => (id, ENDED.to_owned()),
            Err(e) => {
                let id = e.id();
                let how = if e.is_panic() {
                    let payload = e.into_panic();
                    let text = payload
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "(no message)".to_owned());
                    format!("panicked: {text}")
                } else {
                    "was cancelled".to_owned()
                };
                (id, how)
            }
        };
        let (stage, name) = self
            .names
            .remove(&id)
            .unwrap_or((Stage::Sources, format!("task {id}")));
        TaskFailure { name, stage, how }
    }
}

/// How a task that returned by itself is described.
const ENDED: &str = "ended unexpectedly";

/// `tokio::task::spawn_blocking` with `f` boxed: every call site that returns the same type
/// shares one task type, whose task machinery (about 1.4 KB of code each on aarch64) tokio
/// would otherwise build once per closure (README §Building for the site boxes, Size against
/// the 7 MB target). One allocation per call, beside the blocking work it starts.
pub fn spawn_blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> tokio::task::JoinHandle<T> {
    spawn_boxed(Box::new(f))
}

fn spawn_boxed<T: Send + 'static>(f: Box<dyn FnOnce() -> T + Send>) -> tokio::task::JoinHandle<T> {
    tokio::task::spawn_blocking(f)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

    type Log = Arc<Mutex<Vec<&'static str>>>;

    fn push(log: &Log, what: &'static str) {
        log.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(what);
    }

    /// A task that runs until its stop token, then logs `what`.
    fn until_stopped(
        stop: CancellationToken,
        log: &Log,
        what: &'static str,
    ) -> impl Future<Output = ()> + Send + 'static {
        let log = Arc::clone(log);
        async move {
            stop.cancelled().await;
            push(&log, what);
        }
    }

    #[tokio::test]
    async fn a_panicking_task_is_reported_and_the_rest_stop_in_order() {
        let log: Log = Arc::default();
        let mut tree = TaskTree::new();
        let shutdown = CancellationToken::new();
        let sources = tree.stop_token(Stage::Sources);
        let sinks = tree.stop_token(Stage::Sinks);
        tree.spawn(
            Stage::Sources,
            "poller a",
            until_stopped(sources.clone(), &log, "source stopped"),
        );
        // The engine ends once the sources are gone (as its input channel closes).
        let engine_log = Arc::clone(&log);
        tree.spawn(Stage::Engine, "engine", async move {
            sources.cancelled().await;
            push(&engine_log, "engine committed");
        });
        tree.spawn(
            Stage::Sinks,
            "sink x",
            until_stopped(sinks, &log, "sink stopped"),
        );
        tree.spawn(Stage::Sources, "mqtt source b", async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            panic!("broker sent garbage");
        });
        let failure = tokio::time::timeout(Duration::from_secs(10), tree.watch(&shutdown))
            .await
            .expect("bounded");
        assert_eq!(
            failure,
            Some(TaskFailure {
                name: "mqtt source b".into(),
                stage: Stage::Sources,
                how: "panicked: broker sent garbage".into(),
            })
        );
        let more = tokio::time::timeout(Duration::from_secs(10), tree.shutdown())
            .await
            .expect("bounded");
        assert!(more.is_empty(), "{more:?}");
        assert_eq!(
            *log.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            ["source stopped", "engine committed", "sink stopped"]
        );
    }

    #[tokio::test]
    async fn retiring_named_tasks_waits_for_them_and_leaves_the_rest_running() {
        let log: Log = Arc::default();
        let mut tree = TaskTree::new();
        let stage = tree.stop_token(Stage::Sources);
        let (old, kept) = (stage.child_token(), stage.child_token());
        tree.spawn(
            Stage::Sources,
            "mqtt source old",
            until_stopped(old.clone(), &log, "old"),
        );
        tree.spawn(
            Stage::Sources,
            "mqtt source kept",
            until_stopped(kept, &log, "kept"),
        );
        old.cancel();
        let failures = tokio::time::timeout(
            Duration::from_secs(10),
            tree.retire(&["mqtt source old".to_owned()]),
        )
        .await
        .expect("bounded");
        assert!(failures.is_empty(), "{failures:?}");
        assert_eq!(
            *log.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            ["old"]
        );
        // The kept one still runs: retiring it without its stop would wait; a shutdown stops it.
        assert!(tree.shutdown().await.is_empty());
        assert_eq!(
            *log.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            ["old", "kept"]
        );
    }

    #[tokio::test]
    async fn a_task_that_fails_while_others_are_retired_is_reported() {
        let mut tree = TaskTree::new();
        let stop = tree.stop_token(Stage::Sinks).child_token();
        let log: Log = Arc::default();
        tree.spawn(
            Stage::Sinks,
            "sink a",
            until_stopped(stop.clone(), &log, "a"),
        );
        tree.spawn(Stage::Sources, "poller x", async { panic!("wire cut") });
        tokio::time::sleep(Duration::from_millis(20)).await;
        stop.cancel();
        let failures = tree.retire(&["sink a".to_owned()]).await;
        assert_eq!(
            failures
                .iter()
                .map(|f| (f.name.as_str(), f.how.as_str()))
                .collect::<Vec<_>>(),
            [("poller x", "panicked: wire cut")]
        );
    }

    #[tokio::test]
    async fn a_task_that_returns_on_its_own_is_a_failure_and_shutdown_is_not() {
        let log: Log = Arc::default();
        let mut tree = TaskTree::new();
        let shutdown = CancellationToken::new();
        let sinks = tree.stop_token(Stage::Sinks);
        tree.spawn(Stage::Engine, "engine", async {});
        tree.spawn(Stage::Sinks, "sink x", until_stopped(sinks, &log, "sink"));
        let failure = tree.watch(&shutdown).await.expect("the engine ended");
        assert_eq!(
            (failure.name.as_str(), failure.how.as_str()),
            ("engine", ENDED)
        );

        let mut calm = TaskTree::new();
        let stop = calm.stop_token(Stage::Sources);
        calm.spawn(
            Stage::Sources,
            "poller",
            until_stopped(stop, &log, "poller"),
        );
        shutdown.cancel();
        assert_eq!(calm.watch(&shutdown).await, None);
        assert!(calm.shutdown().await.is_empty());
    }
}
