//! A TCP proxy on loopback between the agents and a store's server, which the driver tells to
//! slow every packet down or to cut every open connection: the network faults, without a
//! network namespace (which needs privileges a CI machine may not give).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy; it stops with the driver's runtime.
#[derive(Debug, Clone)]
pub struct Proxy {
    port: u16,
    delay_ms: Arc<AtomicU64>,
    cuts: watch::Sender<u64>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards each connection to `127.0.0.1:target`.
    pub async fn start(target: u16) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (cuts, _) = watch::channel(0);
        let proxy = Proxy {
            port,
            delay_ms,
            cuts,
        };
        let accepting = proxy.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let connection = accepting.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await {
                        connection.forward(client, server).await;
                    }
                });
            }
        });
        Ok(proxy)
    }

    /// The port agents connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Holds every chunk of data `delay` before passing it on (zero: none).
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Closes every connection open now; later ones go through.
    pub fn cut(&self) {
        self.cuts.send_modify(|generation| *generation += 1);
    }

    async fn forward(&self, client: TcpStream, server: TcpStream) {
        let mut cut = self.cuts.subscribe();
        cut.mark_unchanged();
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        let upstream = self.pipe(client_read, server_write);
        let downstream = self.pipe(server_read, client_write);
        tokio::select! {
            _ = async { tokio::join!(upstream, downstream) } => {}
            _ = cut.changed() => {}
        }
    }

    async fn pipe(
        &self,
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
    ) {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let read = match from.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            let delay = self.delay_ms.load(Ordering::Relaxed);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            if to.write_all(&buffer[..read]).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    }
}
