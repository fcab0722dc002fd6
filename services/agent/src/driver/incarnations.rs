//! One process, several incarnations: when peers found this process dead
//! and a node evicted it (a long pause, a cut-off network), the
//! incarnation can never heartbeat again, so the agent starts over as a
//! new one, in the same process: a new machine and detector from
//! `new_driver`, the same status board, probe socket and controls, and the
//! controls the old machine was given ([`Replay`]).

use std::time::Duration;

use tokio::sync::mpsc;
use tracing::warn;
use vipfleet_core::machine::ExitReason;
use vipfleet_core::routes::RouteTable;
use vipfleet_core::store::LeaseStore;

use super::peers::PeerLink;
use super::{Control, Driver, Replay};
use crate::peers::Transport;
use crate::status::StatusBoard;

/// Pause before an evicted agent starts over: its evictor's writes have
/// landed; the pause only keeps a loop of evictions from spinning.
pub const EVICTED_RESTART_DELAY: Duration = Duration::from_millis(500);

/// Runs drivers made by `new_driver` until one ends for good, and says
/// why. `Evicted` comes back only when a stop had been asked for (nothing
/// to start over for).
pub async fn run_incarnations<S, R>(
    board: StatusBoard,
    transport: Option<Transport>,
    controls: &mut mpsc::Receiver<Control>,
    mut new_driver: impl FnMut(StatusBoard, Option<Transport>, Replay) -> Driver<S, R>,
) -> ExitReason
where
    S: LeaseStore + 'static,
    R: RouteTable + 'static,
{
    let mut driver = new_driver(board, transport, Replay::default());
    loop {
        let reason = driver.drive(controls).await;
        let (board, link, replay) = driver.into_parts();
        if reason != ExitReason::Evicted || replay.stop_asked() {
            return reason;
        }
        warn!(
            "peers found this incarnation dead and evicted it (a pause or a network cut?); starting over as a new one"
        );
        tokio::time::sleep(EVICTED_RESTART_DELAY).await;
        driver = new_driver(board, link.map(PeerLink::into_transport), replay);
    }
}
