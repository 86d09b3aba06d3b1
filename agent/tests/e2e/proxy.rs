//! A TCP forwarder on 127.0.0.1:0 in front of a server: a second address for the same server
//! (so two "servers" share one state, as servers sharing one event log do), which a test can
//! cut: it stops listening (the port then refuses) and drops every connection through it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A running forwarder.
pub struct Proxy {
    /// Its port on 127.0.0.1.
    pub port: u16,
    accept: JoinHandle<()>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    active: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
}

/// Counts a connection as active while it lives.
struct Active(Arc<AtomicUsize>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Proxy {
    /// Forwards 127.0.0.1:<new port> to 127.0.0.1:`to`.
    pub async fn start(to: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(Mutex::new(Vec::new()));
        let active = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (conns, act, acc) = (connections.clone(), active.clone(), accepted.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                acc.fetch_add(1, Ordering::SeqCst);
                act.fetch_add(1, Ordering::SeqCst);
                let guard = Active(act.clone());
                let task = tokio::spawn(async move {
                    let _guard = guard;
                    if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", to)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns.lock().unwrap().push(task);
            }
        });
        Proxy {
            port,
            accept,
            connections,
            active,
            accepted,
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Connections open through it now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Connections it accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Stops listening and drops every connection (both sides see them close).
    pub fn cut(&self) {
        self.accept.abort();
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// A port on 127.0.0.1 that refuses connections while the socket lives: bound (so nothing
/// else takes it, e.g. a server of a test running alongside) but not listening.
pub fn refusing_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    (socket, port)
}
