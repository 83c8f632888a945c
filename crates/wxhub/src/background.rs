//! The hub's background tasks, under one shutdown: every task that runs beside the listeners
//! (the account feed, the platforms' watchdogs, the SIGHUP handler, each watch stream's feed)
//! is spawned here, told to stop when shutdown begins, and awaited before the process exits, so
//! that nothing is left running half-done and shutdown has one place to wait.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// See the module docs. Cheap to clone: every clone spawns into, and stops, the same set.
#[derive(Clone, Default)]
pub struct Background {
    /// The tasks spawned so far.
    tasks: TaskTracker,
    /// Cancelled when shutdown begins.
    stopping: CancellationToken,
}

impl Background {
    /// Runs `task` until it ends or shutdown begins, whichever is first.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stopping = self.stopping.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = task => {}
                () = stopping.cancelled() => {}
            }
        });
    }

    /// Runs `task`, which watches [`Background::stopping`] itself and ends on its own once
    /// shutdown begins (a watch stream's feed, which has a last event to send).
    pub fn spawn_listening<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task);
    }

    /// Cancelled when shutdown begins.
    pub fn stopping(&self) -> &CancellationToken {
        &self.stopping
    }

    /// Begins shutdown: every task is told to stop.
    pub fn stop(&self) {
        self.stopping.cancel();
    }

    /// Waits at most `deadline` for every task to end; returns how many had not.
    pub async fn wait(&self, deadline: Duration) -> usize {
        self.tasks.close();
        if tokio::time::timeout(deadline, self.tasks.wait())
            .await
            .is_ok()
        {
            return 0;
        }
        self.tasks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stopping_ends_every_task_and_wait_sees_them_end() {
        let background = Background::default();
        for _ in 0..3 {
            background.spawn(std::future::pending());
        }
        let ends_itself = background.stopping().clone();
        let (said, heard) = tokio::sync::oneshot::channel();
        background.spawn_listening(async move {
            ends_itself.cancelled().await;
            let _ = said.send("last word");
        });
        assert_eq!(background.wait(Duration::from_millis(20)).await, 4);
        background.stop();
        assert_eq!(heard.await, Ok("last word"));
        assert_eq!(background.wait(Duration::from_secs(5)).await, 0);
    }
}
