//! The bridge thread: the only producer of the sequencer and the only consumer of its
//! output, and the owner of the read replica ([`View`]).
//!
//! HTTP handlers send it requests on a bounded crossbeam channel (`try_send`: a full
//! channel is answered -1008 at once, the async side never blocks) and await a tokio
//! oneshot reply:
//!
//! - a **read** is a closure run on the view as it is (every command applied to it is
//!   durable), answered at once;
//! - a **write** is a closure that, on the view, checks the request and builds a
//!   [`Command`] (allocating the order id, registering the client order id) and a finish
//!   closure. The command is `try_submit`ted to the sequencer and the finish waits in a
//!   FIFO. Because the bridge is the sequencer's only producer, the committed outputs come
//!   back in exactly the FIFO's order: the front entry's command is applied to the
//!   replica with the output's seq and timestamp (its events must equal the sequencer's),
//!   and then the finish builds the HTTP answer from the events and the updated view. So
//!   an answer is sent only after the command's events are durable, and a client that
//!   got its answer reads its own write.
//!
//! The bridge never blocks on the sequencer: `try_submit` (a full input queue answers
//! -1008), and it keeps draining the output while idle, so the sequencer never stalls on
//! it. Must never: submit a command it does not put in the FIFO, or answer a write
//! before the output of its command arrived.

use crate::error::ApiError;
use crate::view::View;
use crossbeam_channel::{select, Receiver, Sender, TrySendError};
use perpcore_node::Core;
use perpcore_sequencer::{Committed, Sequencer, TrySubmitError};
use perpcore_types::{Command, Event};
use serde_json::Value;
use std::collections::VecDeque;

pub type Answer = Result<Value, ApiError>;
pub type Reply = tokio::sync::oneshot::Sender<Answer>;
pub type ReadFn = Box<dyn FnOnce(&View) -> Answer + Send>;
/// Runs once the command is durable and applied to the view (`Ok(events)`), or when it
/// could not be submitted (`Err`): it must undo what its prepare registered.
pub type FinishFn = Box<dyn FnOnce(&mut View, Result<&[Event], ApiError>) -> Answer + Send>;
pub type PrepareFn = Box<dyn FnOnce(&mut View) -> Result<(Command, FinishFn), ApiError> + Send>;

pub enum Request {
    Read(ReadFn, Reply),
    Write(PrepareFn, Reply),
    /// Finish the writes in flight, stop the sequencer and exit.
    Stop,
}

struct InFlight {
    command: Command,
    finish: FinishFn,
    reply: Reply,
    /// When it was submitted (accept→durable latency).
    submitted: std::time::Instant,
}

/// What the bridge hands back when it exits.
pub struct BridgeExit {
    pub last_seq: u64,
    pub commands: u64,
    pub result: Result<(), String>,
}

/// The sending side, held by the HTTP handlers.
#[derive(Clone)]
pub struct BridgeClient {
    tx: Sender<Request>,
}

impl BridgeClient {
    pub fn new(tx: Sender<Request>) -> BridgeClient {
        BridgeClient { tx }
    }

    async fn ask(&self, make: impl FnOnce(Reply) -> Request) -> Answer {
        let (reply, rx) = tokio::sync::oneshot::channel();
        match self.tx.try_send(make(reply)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(ApiError::overloaded()),
            Err(TrySendError::Disconnected(_)) => return Err(ApiError::internal("core stopped")),
        }
        rx.await
            .unwrap_or_else(|_| Err(ApiError::internal("core stopped before answering")))
    }

    pub async fn read(&self, f: impl FnOnce(&View) -> Answer + Send + 'static) -> Answer {
        self.ask(|r| Request::Read(Box::new(f), r)).await
    }

    pub async fn write(
        &self,
        f: impl FnOnce(&mut View) -> Result<(Command, FinishFn), ApiError> + Send + 'static,
    ) -> Answer {
        self.ask(|r| Request::Write(Box::new(f), r)).await
    }

    pub fn stop(&self) {
        // Blocking send: the bridge always drains its queue, so this returns.
        let _ = self.tx.send(Request::Stop);
    }
}

/// Applies one durable command (with the events it had) to the view and notes its stream
/// updates: the same in single-node and cluster mode.
#[allow(clippy::too_many_arguments)]
pub(crate) fn apply_durable(
    view: &mut View,
    publisher: &mut crate::publish::Publisher,
    scratch: &mut Vec<Event>,
    seq: u64,
    ts_ns: u64,
    command: &Command,
    events: &[Event],
) {
    publisher.before(view, events);
    view.apply(seq, ts_ns, command, events, scratch);
    publisher.after(view, seq, ts_ns, events);
}

/// The answer of a write whose command never reached the sequencer (or the stream): the
/// order id it allocated, if any, is given back, and its finish undoes what its prepare
/// registered.
pub(crate) fn not_submitted(
    view: &mut View,
    command: &Command,
    finish: FinishFn,
    e: ApiError,
) -> Answer {
    view.release_order_id(command);
    finish(view, Err(e))
}

/// Run the bridge until `Stop` (or the sequencer fails).
pub fn run(
    sequencer: Sequencer<Core>,
    output: Receiver<Vec<Committed<Event>>>,
    requests: Receiver<Request>,
    mut view: View,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    mut publisher: crate::publish::Publisher,
) -> BridgeExit {
    let handle = sequencer.handle();
    let mut fifo: VecDeque<InFlight> = VecDeque::new();
    let mut scratch = Vec::new();
    let mut commands = 0u64;
    let mut stopping = false;
    let mut failure: Option<String> = None;
    let never = crossbeam_channel::never();
    loop {
        if stopping && fifo.is_empty() {
            break;
        }
        // Once stopping, only the outputs of the writes in flight are awaited.
        let requests = if stopping { &never } else { &requests };
        metrics.writes_in_flight.set(fifo.len() as i64);
        select! {
            recv(output) -> msg => {
                let Ok(group) = msg else {
                    failure = Some("the sequencer's output closed".into());
                    break;
                };
                for c in group {
                    let Some(f) = fifo.pop_front() else {
                        failure = Some(format!("output for seq {} without a request", c.seq));
                        break;
                    };
                    apply_durable(&mut view, &mut publisher, &mut scratch, c.seq, c.ts_ns, &f.command, &c.events);
                    metrics.on_committed(&c.events, f.submitted);
                    commands += 1;
                    let answer = (f.finish)(&mut view, Ok(&c.events));
                    let _ = f.reply.send(answer);
                }
                // The group's stream updates, to the hub (never blocks).
                publisher.flush();
                if failure.is_some() {
                    break;
                }
            }
            recv(requests) -> msg => match msg {
                Ok(Request::Read(f, reply)) => {
                    let _ = reply.send(f(&view));
                }
                Ok(Request::Write(prepare, reply)) => {
                    match prepare(&mut view) {
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                        Ok((command, finish)) => match handle.try_submit(command.clone()) {
                            Ok(()) => fifo.push_back(InFlight {
                                command,
                                finish,
                                reply,
                                submitted: std::time::Instant::now(),
                            }),
                            Err(TrySubmitError::Full(command)) => {
                                let _ = reply.send(not_submitted(&mut view, &command, finish, ApiError::overloaded()));
                            }
                            Err(TrySubmitError::Closed(command)) => {
                                let _ = reply.send(not_submitted(&mut view, &command, finish, ApiError::internal("core stopped")));
                            }
                        },
                    }
                }
                Ok(Request::Stop) | Err(_) => stopping = true,
            },
        }
    }
    // Anything still waiting is answered (only after a failure).
    for f in fifo.drain(..) {
        let _ = f.reply.send(Err(ApiError::internal("core stopped")));
    }
    drop(handle);
    let result = match sequencer.shutdown() {
        Ok(_) => failure.map_or(Ok(()), Err),
        Err(e) => Err(e.to_string()),
    };
    BridgeExit {
        last_seq: view.last_seq,
        commands,
        result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use perpcore_engine::Engine;
    use perpcore_types::{
        AccountId, InstrumentId, NewOrder, OrderId, OrderType, PriceTicks, QtyLots, Side, StpMode,
        TimeInForce,
    };

    fn order(id: OrderId) -> Command {
        Command::PlaceOrder(NewOrder {
            account: AccountId(1),
            instrument: InstrumentId(0),
            order_id: id,
            side: Side::Buy,
            order_type: OrderType::Limit,
            tif: TimeInForce::Gtc,
            price: PriceTicks(1),
            qty: QtyLots(1),
            reduce_only: false,
            close_position: false,
            stp: StpMode::ExpireTaker,
        })
    }

    /// The defect: an order id taken by a submission the sequencer refused (-1008, a
    /// full queue) was skipped for good, so ids outran the journal's commands, and after
    /// a restart (which starts ids at the last seq + 1) an id answered before could be
    /// allocated again. Three refused and two journaled orders on a journal at seq 0:
    /// the next id must be 3 (one per journaled command), not 6.
    #[test]
    fn an_order_id_refused_before_the_journal_is_allocated_again() {
        let mut view = View::new(Engine::new(perpcore_config::default_config()), 0, 0);
        let finish: fn() -> FinishFn = || Box::new(|_, outcome| outcome.map(|_| Value::Null));
        let mut journaled = Vec::new();
        for refused in [true, false, true, true, false] {
            let id = view.allocate_order_id();
            if refused {
                let answer = not_submitted(&mut view, &order(id), finish(), ApiError::overloaded());
                assert_eq!(answer.unwrap_err().code, -1008);
            } else {
                journaled.push(id);
            }
        }
        assert_eq!(journaled, vec![OrderId(1), OrderId(2)]);
        assert_eq!(view.allocate_order_id(), OrderId(3));
        // Only the last id allocated is given back: an earlier one stays taken.
        let a = view.allocate_order_id();
        let _b = view.allocate_order_id();
        view.release_order_id(&order(a));
        assert_eq!(view.allocate_order_id(), OrderId(a.0 + 2));
    }
}
