//! A flythrough recording on its own thread, with progress events and cancellation (the viewer's
//! Record panel; the CLI runs [`crate::record::record`] directly).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::Receiver;

use crate::record::{self, Progress, RecordError, RecordJob, Summary};
use crate::render::GpuContext;

pub enum RecordEvent {
    Progress(Progress),
    Done(Result<Summary, RecordError>),
}

pub struct RecordHandle {
    pub events: Receiver<RecordEvent>,
    cancel: Arc<AtomicBool>,
}

impl RecordHandle {
    /// Stops after the frame in progress; a `Done(Err(Cancelled))` event follows.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

/// Starts recording `job` on `gpu` (the viewer's device: the recording shares it with the view).
pub fn spawn(job: RecordJob, gpu: GpuContext) -> RecordHandle {
    let (tx, events) = crossbeam_channel::unbounded();
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    let spawned = std::thread::Builder::new().name("record".into()).spawn(move || {
        let progress_tx = tx.clone();
        let result = record::record(
            &job,
            &gpu,
            &mut |p| {
                let _ = progress_tx.send(RecordEvent::Progress(p));
            },
            &flag,
        );
        let _ = tx.send(RecordEvent::Done(result));
    });
    if let Err(e) = spawned {
        log::error!("cannot start the record thread: {e}");
    }
    RecordHandle { events, cancel }
}
