//! The shutdown signal every service watches.

use tokio::sync::watch;

/// A shutdown signal: cheap to clone, fired once by its [`ShutdownTrigger`] (or when the
/// trigger is dropped).
///
/// ```
/// use es_core::runtime::Shutdown;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let (trigger, shutdown) = Shutdown::new();
/// assert!(!shutdown.is_triggered());
/// let waiting = tokio::spawn(shutdown.clone().wait());
/// trigger.trigger();
/// waiting.await.unwrap();
/// assert!(shutdown.is_triggered());
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// Fires a [`Shutdown`].
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

impl Shutdown {
    /// A signal and its trigger.
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (sender, receiver) = watch::channel(false);
        (ShutdownTrigger(sender), Shutdown(receiver))
    }

    /// Whether the signal has fired.
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }

    /// Completes once the signal fires (at once if it has).
    pub async fn wait(mut self) {
        // An error means the trigger is gone, which counts as fired.
        let _ = self.0.wait_for(|fired| *fired).await;
    }

    /// A signal that fires when this one does or when `other` completes, whichever is first;
    /// the returned trigger fires it by hand too.
    pub fn child(&self) -> (ShutdownTrigger, Shutdown) {
        let (trigger, child) = Shutdown::new();
        let parent = self.clone();
        let sender = trigger.0.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = parent.wait() => { let _ = sender.send(true); }
                () = sender.closed() => {}
            }
        });
        (trigger, child)
    }
}

impl ShutdownTrigger {
    /// Fires the signal.
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}
