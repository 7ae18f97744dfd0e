//! Stops a job whose rank died, hangs or failed, with an error naming that rank, within a
//! timeout: no job waits in a collective forever.
//!
//! MPI and NCCL block a rank in a collective until every rank has joined it; a rank that was
//! killed, or that is stuck, leaves the others waiting with no error (NCCL's asynchronous
//! errors come only for failures it sees itself). So every rank also keeps a TCP connection
//! to rank 0, beside the engine, with its own threads:
//!
//! - each rank sends a heartbeat every `heartbeat` with its progress: how many collectives it
//!   has entered, whether it is inside one and which (and its phase, e.g. `step 12`); rank 0
//!   sends one back;
//! - a connection that closes without a goodbye is a rank that died (the kernel closes a
//!   killed process's sockets at once): named within milliseconds;
//! - no heartbeat for `timeout`: a rank stopped (SIGSTOP, a machine gone);
//! - a rank waiting inside collective #k for `timeout` while another has not reached #k:
//!   that one hangs (alive, but stuck in a computation or a deadlock);
//! - a rank whose own code failed says so first (`FAIL`), and the others stop with its error.
//!
//! Rank 0 judges and tells every rank (`ABORT`); a rank that loses rank 0 judges rank 0
//! itself. The judgement calls the [`FaultHandler`], by default [`exit_on_fault`]: the rank
//! prints the fault and exits with [`EXIT_PEER_FAULT`], from the watchdog thread, while its
//! main thread may still be blocked in MPI or NCCL (which is why it cannot return an error).
//! The same connection carries rank 0's start-up payload to the others (NCCL's unique id).

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{DistError, Result};

/// The exit status of a rank stopped because another rank failed.
pub const EXIT_PEER_FAULT: i32 = 3;

/// Timing of the watchdog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchdogConfig {
    /// How long a rank may be silent, or keep the others waiting in a collective, before it
    /// is declared hung; also the limit for the ranks to connect at start-up.
    pub timeout: Duration,
    /// How often each side sends a heartbeat.
    pub heartbeat: Duration,
}

impl WatchdogConfig {
    /// Heartbeats four times per timeout, at most once a second.
    pub fn with_timeout(timeout: Duration) -> Self {
        Self {
            timeout,
            heartbeat: (timeout / 4).min(Duration::from_secs(1)),
        }
    }
}

/// What stopped the job: the rank at fault (`None` when no single rank is), and what
/// happened to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub culprit: Option<usize>,
    pub what: String,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.culprit {
            Some(r) => write!(f, "rank {r} {}", self.what),
            None => f.write_str(&self.what),
        }
    }
}

impl From<Fault> for DistError {
    fn from(f: Fault) -> Self {
        match f.culprit {
            Some(rank) => DistError::Peer { rank, what: f.what },
            None => DistError::Launch(f.what),
        }
    }
}

/// Called once, on a watchdog thread, when the job must stop.
pub type FaultHandler = Arc<dyn Fn(&Fault) + Send + Sync>;

/// The default handler: prints `rank R: stopping: <fault>` and exits the process with
/// [`EXIT_PEER_FAULT`] (a rank blocked in a collective cannot return).
pub fn exit_on_fault(rank: usize) -> FaultHandler {
    Arc::new(move |fault: &Fault| {
        eprintln!("rank {rank}: stopping: {fault}");
        std::process::exit(EXIT_PEER_FAULT);
    })
}

/// A rank's progress through the sequence of collectives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Progress {
    /// Collectives entered so far.
    seq: u64,
    inside: bool,
    op: String,
    phase: String,
}

impl Progress {
    fn line(&self) -> String {
        format!(
            "BEAT {} {} {} {}\n",
            self.seq,
            u8::from(self.inside),
            word(&self.op),
            word(&self.phase)
        )
    }

    fn parse(rest: &str) -> Option<Self> {
        let mut it = rest.splitn(4, ' ');
        let seq = it.next()?.parse().ok()?;
        let inside = it.next()? == "1";
        let op = unword(it.next()?);
        let phase = unword(it.next().unwrap_or("-"));
        Some(Self {
            seq,
            inside,
            op,
            phase,
        })
    }

    fn describe(&self) -> String {
        let at = if self.inside {
            format!("inside collective #{} ({})", self.seq, self.op)
        } else {
            format!("after collective #{}", self.seq)
        };
        if self.phase.is_empty() {
            at
        } else {
            format!("{at}, {}", self.phase)
        }
    }
}

/// Spaces travel as `\u{1f}` so that a field stays one word of the line.
fn word(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.replace([' ', '\n'], "\u{1f}")
    }
}

fn unword(s: &str) -> String {
    if s == "-" {
        String::new()
    } else {
        s.replace('\u{1f}', " ")
    }
}

/// What rank 0 knows of a rank.
#[derive(Debug)]
struct Peer {
    progress: Progress,
    /// When `progress` last changed (as rank 0 saw it).
    since: Instant,
    last_seen: Instant,
    bye: bool,
    gone: bool,
    who: String,
}

struct Shared {
    rank: usize,
    world: usize,
    cfg: WatchdogConfig,
    me: Mutex<(Progress, Instant)>,
    closing: AtomicBool,
    fired: AtomicBool,
    handler: FaultHandler,
    /// Rank 0: one entry per rank (its own unused). Other ranks: entry 0 is rank 0.
    peers: Mutex<Vec<Option<Peer>>>,
    /// Rank 0: a writer per rank. Other ranks: entry 0 writes to rank 0.
    writers: Vec<Mutex<Option<TcpStream>>>,
}

impl Shared {
    fn send(&self, to: usize, line: &str) {
        if let Some(w) = self.writers[to].lock().expect("writer lock").as_mut() {
            // A peer that is gone is judged by its reader; a failed write needs no handling.
            let _ = w.write_all(line.as_bytes()).and_then(|()| w.flush());
        }
    }

    /// Stops the job once, whatever sees the fault first.
    fn fire(&self, fault: Fault) {
        if self.closing.load(Ordering::SeqCst) || self.fired.swap(true, Ordering::SeqCst) {
            return;
        }
        if self.rank == 0 {
            let culprit = fault.culprit.map_or("-".to_string(), |r| r.to_string());
            let line = format!("ABORT {culprit} {}\n", word(&fault.what));
            // the culprit too: a rank stuck in a computation then stops as well
            for r in 1..self.world {
                self.send(r, &line);
            }
        }
        (self.handler)(&fault);
    }

    fn my_progress(&self) -> (Progress, Instant) {
        self.me.lock().expect("progress lock").clone()
    }
}

/// A rank's side of the watchdog; dropped or [`finish`](Watchdog::finish)ed at the end.
pub struct Watchdog {
    shared: Arc<Shared>,
}

fn err(rank: usize, what: impl Into<String>) -> DistError {
    DistError::Watchdog {
        rank,
        what: what.into(),
    }
}

fn set_timeouts(s: &TcpStream, t: Option<Duration>) -> std::io::Result<()> {
    s.set_read_timeout(t)?;
    s.set_write_timeout(t)
}

impl Watchdog {
    /// Rank 0: waits on `listener` until ranks `1..world` have connected (within the
    /// timeout), gives each `payload`, and starts watching.
    pub fn host(
        listener: TcpListener,
        world: usize,
        cfg: WatchdogConfig,
        payload: &[u8],
        handler: FaultHandler,
    ) -> Result<Self> {
        let addr = listener
            .local_addr()
            .map_or("its port".into(), |a| a.to_string());
        listener
            .set_nonblocking(true)
            .map_err(|e| err(0, e.to_string()))?;
        let deadline = Instant::now() + cfg.timeout;
        let mut conns: Vec<Option<(TcpStream, String)>> = (0..world).map(|_| None).collect();
        while conns[1..].iter().any(Option::is_none) {
            match listener.accept() {
                Ok((stream, from)) => {
                    stream
                        .set_nonblocking(false)
                        .map_err(|e| err(0, e.to_string()))?;
                    set_timeouts(&stream, Some(cfg.timeout)).map_err(|e| err(0, e.to_string()))?;
                    let mut line = String::new();
                    BufReader::new(&stream)
                        .read_line(&mut line)
                        .map_err(|e| err(0, format!("reading the hello of {from}: {e}")))?;
                    let mut it = line.split_whitespace();
                    let (Some("HELLO"), Some(r), who) =
                        (it.next(), it.next(), it.collect::<Vec<_>>())
                    else {
                        return Err(err(
                            0,
                            format!("{from} sent {line:?}, not a dama rank's hello"),
                        ));
                    };
                    let r: usize = r
                        .parse()
                        .map_err(|_| err(0, format!("{from} says it is rank {r:?}")))?;
                    if r == 0 || r >= world {
                        return Err(err(
                            0,
                            format!("{from} says it is rank {r}, outside 1..{world}"),
                        ));
                    }
                    if conns[r].is_some() {
                        return Err(err(
                            0,
                            format!(
                                "two processes say they are rank {r} (the second from {from}): were two jobs started on one port?"
                            ),
                        ));
                    }
                    conns[r] = Some((stream, format!("{} from {from}", who.join(" "))));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        let missing: Vec<String> = (1..world)
                            .filter(|&r| conns[r].is_none())
                            .map(|r| r.to_string())
                            .collect();
                        return Err(DistError::Peer {
                            rank: missing[0].parse().expect("a rank number"),
                            what: format!(
                                "did not connect to rank 0 at {addr} within {:?} (missing ranks: {}); were all ranks started, and can they reach rank 0?",
                                cfg.timeout,
                                missing.join(", ")
                            ),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(err(0, format!("accepting on {addr}: {e}"))),
            }
        }
        let now = Instant::now();
        let mut peers = Vec::with_capacity(world);
        let mut writers = Vec::with_capacity(world);
        let mut readers = Vec::new();
        let welcome = format!("WELCOME {}\n", hex(payload));
        for (r, c) in conns.into_iter().enumerate() {
            match c {
                None => {
                    peers.push(None);
                    writers.push(Mutex::new(None));
                }
                Some((stream, who)) => {
                    let mut w = stream.try_clone().map_err(|e| err(0, e.to_string()))?;
                    w.write_all(welcome.as_bytes())
                        .map_err(|e| err(0, format!("welcoming rank {r}: {e}")))?;
                    stream
                        .set_read_timeout(None)
                        .map_err(|e| err(0, e.to_string()))?;
                    readers.push((r, stream));
                    peers.push(Some(Peer {
                        progress: Progress::default(),
                        since: now,
                        last_seen: now,
                        bye: false,
                        gone: false,
                        who,
                    }));
                    writers.push(Mutex::new(Some(w)));
                }
            }
        }
        let shared = Arc::new(Shared {
            rank: 0,
            world,
            cfg,
            me: Mutex::new((Progress::default(), now)),
            closing: AtomicBool::new(false),
            fired: AtomicBool::new(false),
            handler,
            peers: Mutex::new(peers),
            writers,
        });
        for (r, stream) in readers {
            let s = shared.clone();
            std::thread::Builder::new()
                .name(format!("watchdog-rank{r}"))
                .spawn(move || host_reader(&s, r, stream))
                .map_err(|e| err(0, e.to_string()))?;
        }
        let s = shared.clone();
        std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || host_monitor(&s))
            .map_err(|e| err(0, e.to_string()))?;
        Ok(Self { shared })
    }

    /// Rank `rank` (> 0): connects to rank 0 at `addr` (retrying until the timeout: rank 0
    /// may not listen yet), returns rank 0's payload, and starts watching.
    pub fn join(
        addr: &str,
        rank: usize,
        world: usize,
        cfg: WatchdogConfig,
        handler: FaultHandler,
    ) -> Result<(Self, Vec<u8>)> {
        let deadline = Instant::now() + cfg.timeout;
        let stream = loop {
            let tried = addr
                .to_socket_addrs()
                .map_err(|e| err(rank, format!("resolving rank 0's address {addr}: {e}")))
                .and_then(|mut a| {
                    a.next()
                        .ok_or_else(|| err(rank, format!("{addr} resolves to nothing")))
                })
                .map(|a| TcpStream::connect_timeout(&a, Duration::from_secs(1)));
            match tried? {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => {
                    return Err(DistError::Peer {
                        rank: 0,
                        what: format!(
                            "could not be reached at {addr} within {:?} ({e}): is rank 0 running, and is the address right?",
                            cfg.timeout
                        ),
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        set_timeouts(&stream, Some(cfg.timeout)).map_err(|e| err(rank, e.to_string()))?;
        let mut w = stream.try_clone().map_err(|e| err(rank, e.to_string()))?;
        let host = hostname();
        writeln!(w, "HELLO {rank} pid={} host={host}", std::process::id())
            .map_err(|e| err(rank, format!("greeting rank 0 at {addr}: {e}")))?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).map_err(|e| DistError::Peer {
            rank: 0,
            what: format!("did not welcome rank {rank} within {:?}: {e}", cfg.timeout),
        })?;
        let payload = line
            .strip_prefix("WELCOME ")
            .and_then(|h| unhex(h.trim()))
            .ok_or_else(|| err(rank, format!("rank 0 answered {line:?}")))?;
        reader
            .get_ref()
            .set_read_timeout(None)
            .map_err(|e| err(rank, e.to_string()))?;
        let now = Instant::now();
        let mut writers = vec![Mutex::new(Some(w))];
        writers.resize_with(world.max(1), || Mutex::new(None));
        let shared = Arc::new(Shared {
            rank,
            world,
            cfg,
            me: Mutex::new((Progress::default(), now)),
            closing: AtomicBool::new(false),
            fired: AtomicBool::new(false),
            handler,
            peers: Mutex::new(vec![Some(Peer {
                progress: Progress::default(),
                since: now,
                last_seen: now,
                bye: false,
                gone: false,
                who: addr.to_owned(),
            })]),
            writers,
        });
        let s = shared.clone();
        std::thread::Builder::new()
            .name("watchdog-rank0".into())
            .spawn(move || member_reader(&s, reader))
            .map_err(|e| err(rank, e.to_string()))?;
        let s = shared.clone();
        std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || member_heartbeat(&s))
            .map_err(|e| err(rank, e.to_string()))?;
        Ok((Self { shared }, payload))
    }

    /// The rank enters collective `op`.
    pub fn enter(&self, op: &str) {
        let mut me = self.shared.me.lock().expect("progress lock");
        me.0.seq += 1;
        me.0.inside = true;
        me.0.op.clear();
        me.0.op.push_str(op);
        me.1 = Instant::now();
    }

    /// The rank left the collective it entered.
    pub fn leave(&self) {
        let mut me = self.shared.me.lock().expect("progress lock");
        me.0.inside = false;
        me.1 = Instant::now();
    }

    /// What the rank is doing between collectives (shown when it is named hung).
    pub fn phase(&self, what: &str) {
        let mut me = self.shared.me.lock().expect("progress lock");
        me.0.phase.clear();
        me.0.phase.push_str(what);
    }

    /// This rank failed with `message` (and will exit on its own): the others stop with it.
    pub fn fail(&self, message: &str) {
        let s = &self.shared;
        if s.fired.swap(true, Ordering::SeqCst) {
            return;
        }
        if s.rank == 0 {
            let line = format!("ABORT 0 {}\n", word(&format!("failed: {message}")));
            for r in 1..s.world {
                s.send(r, &line);
            }
        } else {
            s.send(0, &format!("FAIL {}\n", word(message)));
        }
    }

    /// The job ended well: every rank says goodbye (rank 0 waits for the others', up to the
    /// timeout), and no connection that closes now is a fault.
    pub fn finish(self) {
        let s = &self.shared;
        s.closing.store(true, Ordering::SeqCst);
        if s.rank == 0 {
            let deadline = Instant::now() + s.cfg.timeout;
            while Instant::now() < deadline {
                let done = s
                    .peers
                    .lock()
                    .expect("peer lock")
                    .iter()
                    .flatten()
                    .all(|p| p.bye || p.gone);
                if done {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        } else {
            s.send(0, "BYE\n");
        }
        for w in &s.writers {
            if let Some(w) = w.lock().expect("writer lock").take() {
                let _ = w.shutdown(Shutdown::Both);
            }
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "?".into())
}

fn hex(b: &[u8]) -> String {
    if b.is_empty() {
        return "-".into();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s == "-" {
        return Some(Vec::new());
    }
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// Rank 0's reader of rank `r`'s connection.
fn host_reader(s: &Shared, r: usize, stream: TcpStream) {
    let reader = BufReader::new(stream);
    for line in reader.lines() {
        let Ok(line) = line else { break };
        let (kind, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        match kind {
            "BEAT" => {
                if let Some(p) = Progress::parse(rest) {
                    let mut peers = s.peers.lock().expect("peer lock");
                    let peer = peers[r].as_mut().expect("a connected rank");
                    let now = Instant::now();
                    if peer.progress != p {
                        peer.since = now;
                        peer.progress = p;
                    }
                    peer.last_seen = now;
                }
            }
            "FAIL" => s.fire(Fault {
                culprit: Some(r),
                what: format!("failed: {}", unword(rest)),
            }),
            "BYE" => {
                if let Some(p) = s.peers.lock().expect("peer lock")[r].as_mut() {
                    p.bye = true;
                }
            }
            _ => {}
        }
    }
    let (bye, who) = {
        let mut peers = s.peers.lock().expect("peer lock");
        let p = peers[r].as_mut().expect("a connected rank");
        p.gone = true;
        (p.bye, p.who.clone())
    };
    if !bye {
        s.fire(Fault {
            culprit: Some(r),
            what: format!(
                "died: its connection to rank 0 closed without a goodbye (killed, crashed or out of memory; {who})"
            ),
        });
    }
}

/// Rank 0's heartbeat and judge.
fn host_monitor(s: &Shared) {
    let timeout = s.cfg.timeout;
    loop {
        std::thread::sleep(s.cfg.heartbeat);
        if s.closing.load(Ordering::SeqCst) || s.fired.load(Ordering::SeqCst) {
            return;
        }
        let (mine, my_since) = s.my_progress();
        let line = mine.line();
        for r in 1..s.world {
            s.send(r, &line);
        }
        let fault = {
            let peers = s.peers.lock().expect("peer lock");
            judge(&peers, (&mine, my_since), timeout)
        };
        if let Some(f) = fault {
            s.fire(f);
            return;
        }
    }
}

/// The rule: a silent rank, else a rank that keeps another waiting in a collective, else a
/// collective that every rank entered but none left.
fn judge(peers: &[Option<Peer>], mine: (&Progress, Instant), timeout: Duration) -> Option<Fault> {
    let secs = timeout.as_secs_f64();
    for (r, p) in peers.iter().enumerate() {
        if let Some(p) = p
            && !p.bye
            && !p.gone
            && p.last_seen.elapsed() > timeout
        {
            return Some(Fault {
                culprit: Some(r),
                what: format!(
                    "stopped responding: no heartbeat for {secs:.0} s (stopped, hung hard, or its machine is unreachable; last {})",
                    p.progress.describe()
                ),
            });
        }
    }
    let table: Vec<(usize, &Progress, Instant)> = std::iter::once((0, mine.0, mine.1))
        .chain(peers.iter().enumerate().filter_map(|(r, p)| {
            p.as_ref()
                .filter(|p| !p.bye)
                .map(|p| (r, &p.progress, p.since))
        }))
        .collect();
    let waiting: Vec<&(usize, &Progress, Instant)> = table
        .iter()
        .filter(|(_, p, since)| p.inside && since.elapsed() > timeout)
        .collect();
    let &&(_, wp, _) = waiting.iter().max_by_key(|(_, p, _)| p.seq)?;
    let waiters: Vec<String> = waiting
        .iter()
        .filter(|(_, p, _)| p.seq == wp.seq)
        .map(|(r, _, _)| r.to_string())
        .collect();
    if let Some((late, lp, _)) = table.iter().find(|(_, p, _)| p.seq < wp.seq) {
        return Some(Fault {
            culprit: Some(*late),
            what: format!(
                "did not reach collective #{} ({}) within {secs:.0} s while rank {} waited in it (it is {})",
                wp.seq,
                wp.op,
                waiters.join(", "),
                lp.describe()
            ),
        });
    }
    Some(Fault {
        culprit: None,
        what: format!(
            "collective #{} ({}) did not complete within {secs:.0} s although every rank entered it (the engine or the network hangs)",
            wp.seq, wp.op
        ),
    })
}

/// A rank's reader of rank 0's connection.
fn member_reader(s: &Shared, reader: BufReader<TcpStream>) {
    for line in reader.lines() {
        let Ok(line) = line else { break };
        let (kind, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        match kind {
            "BEAT" => {
                if let Some(p) = s.peers.lock().expect("peer lock")[0].as_mut() {
                    p.last_seen = Instant::now();
                }
            }
            "ABORT" => {
                let (culprit, what) = rest.split_once(' ').unwrap_or((rest, ""));
                s.fire(Fault {
                    culprit: culprit.parse().ok(),
                    what: unword(what),
                });
                return;
            }
            _ => {}
        }
    }
    s.fire(Fault {
        culprit: Some(0),
        what: "died: its connection closed without a goodbye (killed, crashed or out of memory)"
            .into(),
    });
}

/// A rank's heartbeat, and its judgement of rank 0's silence.
fn member_heartbeat(s: &Shared) {
    loop {
        if s.closing.load(Ordering::SeqCst) || s.fired.load(Ordering::SeqCst) {
            return;
        }
        let line = s.my_progress().0.line();
        s.send(0, &line);
        let silent = s.peers.lock().expect("peer lock")[0]
            .as_ref()
            .is_some_and(|p| p.last_seen.elapsed() > s.cfg.timeout);
        if silent {
            s.fire(Fault {
                culprit: Some(0),
                what: format!(
                    "stopped responding: no heartbeat for {:.0} s (stopped, hung hard, or its machine is unreachable)",
                    s.cfg.timeout.as_secs_f64()
                ),
            });
            return;
        }
        std::thread::sleep(s.cfg.heartbeat);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn recorder() -> (FaultHandler, mpsc::Receiver<Fault>) {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        (
            Arc::new(move |f: &Fault| {
                let _ = tx.lock().unwrap().send(f.clone());
            }),
            rx,
        )
    }

    fn cfg(ms: u64) -> WatchdogConfig {
        WatchdogConfig {
            timeout: Duration::from_millis(ms),
            heartbeat: Duration::from_millis(ms / 8),
        }
    }

    /// Rank 0 and `world − 1` members in threads of this process, over localhost.
    fn job(world: usize, ms: u64) -> (Vec<Watchdog>, Vec<mpsc::Receiver<Fault>>, Vec<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let members: Vec<_> = (1..world)
            .map(|r| {
                let addr = addr.clone();
                std::thread::spawn(move || {
                    let (h, rx) = recorder();
                    let (w, payload) = Watchdog::join(&addr, r, world, cfg(ms), h).unwrap();
                    (w, rx, payload)
                })
            })
            .collect();
        let (h, rx0) = recorder();
        let host = Watchdog::host(listener, world, cfg(ms), b"id-123", h).unwrap();
        let mut dogs = vec![host];
        let mut rxs = vec![rx0];
        let mut payloads = vec![b"id-123".to_vec()];
        for m in members {
            let (w, rx, p) = m.join().unwrap();
            dogs.push(w);
            rxs.push(rx);
            payloads.push(p);
        }
        (dogs, rxs, payloads)
    }

    #[test]
    fn a_clean_job_delivers_the_payload_and_finishes_without_a_fault() {
        let (dogs, rxs, payloads) = job(3, 400);
        assert!(payloads.iter().all(|p| p == b"id-123"));
        for d in &dogs {
            d.enter("all_reduce_sum");
            d.leave();
        }
        std::thread::sleep(Duration::from_millis(150));
        let mut dogs = dogs.into_iter();
        let host = dogs.next().unwrap();
        let members: Vec<_> = dogs.collect();
        let t = std::thread::spawn(move || host.finish());
        for m in members {
            m.finish();
        }
        t.join().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        for rx in rxs {
            assert!(rx.try_recv().is_err());
        }
    }

    #[test]
    fn a_rank_that_stays_behind_is_named_by_everyone() {
        let (dogs, rxs, _) = job(3, 600);
        // ranks 0 and 1 enter collective #1, rank 2 never does
        dogs[0].enter("all_reduce_sum");
        dogs[1].enter("all_reduce_sum");
        dogs[2].phase("step 3");
        let t = Instant::now();
        for rx in &rxs {
            let f = rx.recv_timeout(Duration::from_secs(5)).unwrap();
            assert_eq!(f.culprit, Some(2), "{f}");
            assert!(f.what.contains("did not reach collective #1"), "{f}");
            assert!(f.what.contains("step 3"), "{f}");
        }
        let waited = t.elapsed();
        assert!(
            waited >= Duration::from_millis(600) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
        drop(dogs);
    }

    #[test]
    fn a_failure_is_passed_on_with_its_message() {
        let (dogs, rxs, _) = job(3, 2000);
        dogs[1].fail("reading pairs.jsonl: disk error");
        for (r, rx) in rxs.iter().enumerate() {
            if r == 1 {
                continue; // the failing rank reports its own error
            }
            let f = rx.recv_timeout(Duration::from_secs(2)).unwrap();
            assert_eq!(f.culprit, Some(1));
            assert_eq!(f.what, "failed: reading pairs.jsonl: disk error");
        }
        assert!(rxs[1].try_recv().is_err());
    }

    #[test]
    fn a_rank_whose_connection_drops_died() {
        let (dogs, rxs, _) = job(2, 5000);
        // what the kernel does for a killed process: its sockets close
        let w = dogs[1].shared.writers[0].lock().unwrap().take().unwrap();
        w.shutdown(Shutdown::Both).unwrap();
        let t = Instant::now();
        let f = rxs[0].recv_timeout(Duration::from_secs(2)).unwrap();
        assert_eq!(f.culprit, Some(1));
        assert!(f.what.starts_with("died"), "{f}");
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn silence_is_a_hang() {
        let (dogs, rxs, _) = job(2, 500);
        // rank 1 stops sending (as a stopped process would) but its socket stays open
        dogs[1].shared.closing.store(true, Ordering::SeqCst);
        let f = rxs[0].recv_timeout(Duration::from_secs(3)).unwrap();
        assert_eq!(f.culprit, Some(1));
        assert!(f.what.contains("no heartbeat"), "{f}");
    }

    #[test]
    fn missing_ranks_are_named_at_start_up() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (h, _rx) = recorder();
        let e = Watchdog::host(listener, 3, cfg(300), b"", h)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("missing ranks: 1, 2"), "{e}");
    }

    #[test]
    fn beats_round_trip_with_spaces() {
        let p = Progress {
            seq: 7,
            inside: true,
            op: "all_gather".into(),
            phase: "step 3: gradients".into(),
        };
        assert_eq!(
            Progress::parse(p.line().trim_end().strip_prefix("BEAT ").unwrap()),
            Some(p)
        );
        assert_eq!(unhex(&hex(b"\x00\xffab")).unwrap(), b"\x00\xffab");
        assert_eq!(unhex(&hex(b"")).unwrap(), b"");
    }
}
