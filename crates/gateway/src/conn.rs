//! The listeners' TCP side: connection limits, the open-connections gauge, and the
//! client address handlers see.
//!
//! [`Guarded`] wraps a tokio `TcpListener` as an axum `Listener`: a connection past the
//! listener's limit, in total or for its client address, is closed at once (counted in
//! `perpcore_gateway_refused_connections`); an accepted one carries a guard that
//! decrements the counts when hyper drops it. Accept errors are handled as axum's own
//! listener does (it retries, backing off on resource exhaustion). Must never: hold a
//! lock across an await, or count a connection twice.

use crate::limits::{address_key, AddressKey};
use crate::metrics::{ListenerLabels, Metrics};
use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// The client's address, for handlers (`ConnectInfo<ClientAddr>`).
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, Guarded>> for ClientAddr {
    fn connect_info(stream: IncomingStream<'_, Guarded>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

struct Counts {
    total: usize,
    per_address: HashMap<AddressKey, usize>,
}

struct Shared {
    name: &'static str,
    max_total: usize,
    max_per_address: usize,
    counts: Mutex<Counts>,
    metrics: Arc<Metrics>,
}

impl Shared {
    fn admit(self: &Arc<Self>, addr: SocketAddr) -> Option<ConnGuard> {
        let key = address_key(addr.ip());
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let mine = c.per_address.get(&key).copied().unwrap_or(0);
        if (self.max_total > 0 && c.total >= self.max_total)
            || (self.max_per_address > 0 && mine >= self.max_per_address)
        {
            return None;
        }
        c.total += 1;
        c.per_address.insert(key, mine + 1);
        drop(c);
        self.gauge().inc();
        Some(ConnGuard {
            shared: Arc::clone(self),
            key,
        })
    }
    fn gauge(&self) -> prometheus_client::metrics::gauge::Gauge {
        self.metrics
            .open_connections
            .get_or_create(&ListenerLabels {
                listener: self.name,
            })
            .clone()
    }
}

struct ConnGuard {
    shared: Arc<Shared>,
    key: AddressKey,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut c = self.shared.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_address.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                c.per_address.remove(&self.key);
            }
        }
        drop(c);
        self.shared.gauge().dec();
    }
}

/// A TCP listener with connection limits (0: none).
pub struct Guarded {
    inner: TcpListener,
    shared: Arc<Shared>,
}

impl Guarded {
    pub fn new(
        inner: TcpListener,
        name: &'static str,
        max_total: usize,
        max_per_address: usize,
        metrics: Arc<Metrics>,
    ) -> Guarded {
        // Listed at zero from the start, so a scrape shows the listener.
        let _ = metrics
            .open_connections
            .get_or_create(&ListenerLabels { listener: name });
        Guarded {
            inner,
            shared: Arc::new(Shared {
                name,
                max_total,
                max_per_address,
                counts: Mutex::new(Counts {
                    total: 0,
                    per_address: HashMap::new(),
                }),
                metrics,
            }),
        }
    }
}

impl axum::serve::Listener for Guarded {
    type Io = Tracked;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Tracked, SocketAddr) {
        loop {
            let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
            match self.shared.admit(addr) {
                Some(guard) => {
                    return (
                        Tracked {
                            stream,
                            _guard: guard,
                        },
                        addr,
                    )
                }
                None => {
                    self.shared
                        .metrics
                        .refused_connections
                        .get_or_create(&ListenerLabels {
                            listener: self.shared.name,
                        })
                        .inc();
                    drop(stream);
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// An accepted connection: the stream and the guard that counts it.
pub struct Tracked {
    stream: TcpStream,
    _guard: ConnGuard,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
