//! `LineageStore`: the one owner of sled. Appends are atomic (one
//! `apply_batch` on one tree) and durable before they return (sled flush, then
//! an fsync of the database file: sled's Linux flush alone uses
//! `sync_file_range`, which does not reach the disk).

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use seedling_common::ids::{NodeId, PlanId};
use seedling_common::lineage::{Edge, EdgeKind, LineageBatch, Node, NodeKind, NodeStatus};
use seedling_common::record::{ProcessingStep, Trace};
use seedling_common::time::rfc3339_from_unix_ms;

use super::LineageError;
use super::codec;
use super::keys;

/// File beside sled's own files naming the process that owns the store.
const OWNER_FILE: &str = "owner.pid";

/// How long a lock this process just released may take to come free.
const RELEASE_GRACE: Duration = Duration::from_secs(2);

/// What an `N` key holds: the node with its edges embedded, so that a
/// record's nodes and most of its edges cost one key each (sled's insert
/// path, not the bytes, bounds ingest). Parents are always complete here.
/// Children are embedded when they were written in the same batch as the
/// parent; children added later live under `C` keys.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct StoredNode {
    node: Node,
    #[serde(default, rename = "p")]
    parents: Vec<(EdgeKind, NodeId)>,
    #[serde(default, rename = "c")]
    children: Vec<(EdgeKind, NodeId)>,
}

/// Limits of a graph walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Walk {
    pub max_depth: usize,
    pub limit: usize,
}

impl Default for Walk {
    fn default() -> Self {
        Self {
            max_depth: usize::MAX,
            limit: 10_000,
        }
    }
}

/// A node reached by a walk: how far, and over which edge kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reached {
    pub id: NodeId,
    pub depth: usize,
    pub via: EdgeKind,
}

/// What one append changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppendOutcome {
    pub nodes_written: usize,
    /// Nodes already stored under the same id: first write wins.
    pub nodes_existing: usize,
    pub edges_written: usize,
    pub status_changes: usize,
}

/// The result of `store check`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub nodes: usize,
    pub edges: usize,
    pub index_entries: usize,
    pub problems: Vec<String>,
}

impl CheckReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The sled-backed lineage DAG.
#[derive(Debug)]
pub struct LineageStore {
    dir: PathBuf,
    /// sled's handles. `None` only while [`LineageStore::reopen`] swaps
    /// them, or after it failed.
    sled: RwLock<Option<Sled>>,
    /// One writer at a time: cycle checks and status updates read, then write.
    writer: Mutex<()>,
}

/// One open sled database: cheap handles, cloned for each operation so that
/// a reopen can swap them.
#[derive(Debug, Clone)]
struct Sled {
    db: sled::Db,
    tree: sled::Tree,
    /// sled's database file, synced after each flush.
    db_file: Arc<File>,
}

/// A failure outside sled (the owner file, an fsync, encoding).
fn other_io(e: impl std::fmt::Display) -> LineageError {
    LineageError::Io(e.to_string())
}

/// A sled failure as the store reports it: damaged files are named as
/// such, with what restores them.
fn io(e: sled::Error) -> LineageError {
    match e {
        sled::Error::Corruption { at, .. } => LineageError::Damaged {
            at: at.map_or("an unknown offset".into(), |at| format!("{at:?}")),
        },
        // The OS's own words ("No space left on device (os error 28)").
        sled::Error::Io(e) => LineageError::Io(e.to_string()),
        other => LineageError::Io(other.to_string()),
    }
}

impl LineageStore {
    /// Opens (creating if needed) the store in `dir`. A store another process
    /// holds is refused with that process's pid.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, LineageError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| LineageError::Open {
            dir: dir.clone(),
            reason: e.to_string(),
        })?;
        let sled = Sled::open(&dir)?;
        Ok(Self {
            dir,
            sled: RwLock::new(Some(sled)),
            writer: Mutex::new(()),
        })
    }

    /// The open database's handles, or why there are none.
    fn sled(&self) -> Result<Sled, LineageError> {
        self.sled
            .read()
            .expect("sled handles")
            .clone()
            .ok_or_else(|| {
                LineageError::Io(format!(
                    "the lineage store in {} could not be opened again after a failed write",
                    self.dir.display()
                ))
            })
    }

    fn tree(&self) -> Result<sled::Tree, LineageError> {
        self.sled().map(|s| s.tree)
    }

    /// Opens sled again on the same files. After an I/O error (a full or
    /// read-only disk) sled refuses every operation of that open database
    /// for good; a fresh open reads back what was durable and writes again
    /// once the disk lets it. Waits for writers; readers wait meanwhile.
    pub fn reopen(&self) -> Result<(), LineageError> {
        let _writing = self.writer.lock().expect("store writer lock");
        let mut sled = self.sled.write().expect("sled handles");
        // sled lets go of its file lock once every handle is gone.
        drop(sled.take());
        *sled = Some(Sled::open(&self.dir)?);
        Ok(())
    }

    /// Whether a write reaches the disk now: a probe key written, made
    /// durable and removed again.
    pub fn probe_write(&self) -> Result<(), LineageError> {
        let _writing = self.writer.lock().expect("store writer lock");
        let tree = self.tree()?;
        tree.insert(keys::PROBE, &[][..]).map_err(io)?;
        self.sync()?;
        tree.remove(keys::PROBE).map_err(io)?;
        self.sync()
    }
}

impl Sled {
    fn open(dir: &Path) -> Result<Self, LineageError> {
        let db = Self::open_db(dir)?;
        std::fs::write(dir.join(OWNER_FILE), std::process::id().to_string()).map_err(other_io)?;
        let tree = db.open_tree("lineage").map_err(io)?;
        let db_file = File::open(dir.join("db")).map_err(|e| LineageError::Open {
            dir: dir.to_path_buf(),
            reason: format!("sled database file: {e}"),
        })?;
        Ok(Self {
            db,
            tree,
            db_file: Arc::new(db_file),
        })
    }

    /// Opens sled in `dir`. sled lets go of its file lock only when its
    /// background flusher drops its handle, a moment after the store is
    /// dropped: so a lock held by this process, or by nobody named in the
    /// owner file, is waited for briefly before it counts as in use.
    fn open_db(dir: &Path) -> Result<sled::Db, LineageError> {
        let deadline = Instant::now() + RELEASE_GRACE;
        loop {
            let opened = sled::Config::new()
                .path(dir)
                // sled's page cache defaults to 1 GiB; lineage reads are mostly
                // recent nodes, so a smaller cache bounds the coordinator's memory.
                .cache_capacity(256 * 1024 * 1024)
                .open();
            let reason = match opened {
                Ok(db) => return Ok(db),
                Err(e @ sled::Error::Corruption { .. }) => return Err(io(e)),
                Err(e) => e.to_string(),
            };
            if !reason.contains("could not acquire lock") {
                return Err(LineageError::Open {
                    dir: dir.to_path_buf(),
                    reason,
                });
            }
            let owner = std::fs::read_to_string(dir.join(OWNER_FILE))
                .map(|p| p.trim().to_string())
                .ok();
            let ours_or_nobody = owner
                .as_deref()
                .is_none_or(|pid| pid == std::process::id().to_string());
            if !ours_or_nobody || Instant::now() >= deadline {
                return Err(LineageError::InUse {
                    dir: dir.to_path_buf(),
                    pid: owner.unwrap_or_else(|| "unknown".into()),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl LineageStore {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes sled uses on disk.
    pub fn size_on_disk(&self) -> Result<u64, LineageError> {
        self.sled()?.db.size_on_disk().map_err(io)
    }

    fn get_payload(&self, key: &[u8]) -> Result<Option<Vec<u8>>, LineageError> {
        match self.tree()?.get(key).map_err(io)? {
            None => Ok(None),
            Some(value) => codec::open(key, &value).map(|p| Some(p.to_vec())),
        }
    }

    fn stored(&self, id: &NodeId) -> Result<Option<StoredNode>, LineageError> {
        let key = keys::node(id);
        match self.get_payload(&key)? {
            None => Ok(None),
            Some(payload) => decode_node(&key, &payload).map(Some),
        }
    }

    fn require_stored(&self, id: &NodeId) -> Result<StoredNode, LineageError> {
        self.stored(id)?
            .ok_or_else(|| LineageError::NodeNotFound(id.to_string()))
    }

    pub fn node(&self, id: &NodeId) -> Result<Option<Node>, LineageError> {
        Ok(self.stored(id)?.map(|stored| stored.node))
    }

    /// The node, or a `NodeNotFound` error naming it.
    pub fn require(&self, id: &NodeId) -> Result<Node, LineageError> {
        self.require_stored(id).map(|stored| stored.node)
    }

    fn contains(&self, id: &NodeId) -> Result<bool, LineageError> {
        self.tree()?.contains_key(keys::node(id)).map_err(io)
    }

    /// Children added after their parent was written (`C` keys).
    fn late_children(&self, id: &NodeId) -> Result<Vec<(EdgeKind, NodeId)>, LineageError> {
        let mut out = Vec::new();
        for entry in self.tree()?.scan_prefix(keys::edges_of(keys::CHILD, id)) {
            let (key, value) = entry.map_err(io)?;
            let payload = codec::open(&key, &value)?;
            let children =
                keys::late_children(&key, payload).ok_or_else(|| LineageError::Corrupt {
                    key: keys::printable(&key),
                    reason: "malformed child edge".into(),
                })?;
            out.extend(children);
        }
        Ok(out)
    }

    /// Direct parents (origins) of a node, with the edge kinds.
    pub fn parents(&self, id: &NodeId) -> Result<Vec<(EdgeKind, NodeId)>, LineageError> {
        Ok(self.require_stored(id)?.parents)
    }

    /// Direct children (derivatives and decisions) of a node.
    pub fn children(&self, id: &NodeId) -> Result<Vec<(EdgeKind, NodeId)>, LineageError> {
        let mut children = self.require_stored(id)?.children;
        children.extend(self.late_children(id)?);
        Ok(children)
    }

    fn walk(&self, start: &NodeId, upward: bool, walk: Walk) -> Result<Vec<Reached>, LineageError> {
        let mut seen = HashSet::from([start.clone()]);
        let mut queue = VecDeque::from([(start.clone(), 0usize)]);
        let mut out = Vec::new();
        while let Some((id, depth)) = queue.pop_front() {
            if depth >= walk.max_depth {
                continue;
            }
            let next_nodes = if upward {
                self.parents(&id)?
            } else {
                self.children(&id)?
            };
            for (kind, next) in next_nodes {
                if out.len() >= walk.limit {
                    return Ok(out);
                }
                if seen.insert(next.clone()) {
                    out.push(Reached {
                        id: next.clone(),
                        depth: depth + 1,
                        via: kind,
                    });
                    queue.push_back((next, depth + 1));
                }
            }
        }
        Ok(out)
    }

    /// Everything a node came from, nearest first (breadth-first).
    pub fn ancestors(&self, id: &NodeId, walk: Walk) -> Result<Vec<Reached>, LineageError> {
        self.walk(id, true, walk)
    }

    /// Everything derived from or decided about a node, nearest first.
    pub fn descendants(&self, id: &NodeId, walk: Walk) -> Result<Vec<Reached>, LineageError> {
        self.walk(id, false, walk)
    }

    /// Every plan with nodes in the store, in id order. Jumps from one plan's
    /// index range to the next, so it reads one key per plan.
    pub fn plans(&self) -> Result<Vec<PlanId>, LineageError> {
        let mut plans = Vec::new();
        let mut from = vec![keys::INDEX];
        let tree = self.tree()?;
        while let Some(entry) = tree.range(from.clone()..).next() {
            let (key, _) = entry.map_err(io)?;
            if key.first() != Some(&keys::INDEX) {
                break;
            }
            let Some(sep) = key.iter().position(|b| *b == 0) else {
                return Err(LineageError::Corrupt {
                    key: keys::printable(&key),
                    reason: "malformed index key".into(),
                });
            };
            plans.push(PlanId::new(
                String::from_utf8_lossy(&key[1..sep]).into_owned(),
            ));
            // Past every key of this plan: its separator is the lowest byte.
            from = key[..sep].to_vec();
            from.push(1);
        }
        Ok(plans)
    }

    /// Ids of a plan's filed nodes (those [`keys::indexed`] names: not an
    /// attempt's steps and verdicts), optionally of one kind and status, in
    /// id order. [`Self::plan_nodes`] has every node.
    pub fn nodes_of_plan(
        &self,
        plan: &PlanId,
        kind: Option<NodeKind>,
        status: Option<NodeStatus>,
    ) -> impl Iterator<Item = Result<NodeId, LineageError>> + '_ {
        // The index orders kind before status, so a status needs a kind.
        let status = kind.and(status);
        self.entries(Some(keys::index_prefix(plan, kind, status)))
            .map(|entry| {
                let (key, value) = entry.map_err(io)?;
                codec::open(&key, &value)?;
                keys::index_node(&key).ok_or_else(|| LineageError::Corrupt {
                    key: keys::printable(&key),
                    reason: "malformed index key".into(),
                })
            })
    }

    /// Every node of a plan: the filed ones, and the steps below them that
    /// the index leaves out (see [`Self::plan_subgraph`]).
    pub fn plan_nodes(&self, plan: &PlanId) -> Result<Vec<Node>, LineageError> {
        Ok(self.plan_subgraph(plan)?.0)
    }

    /// Every node of a plan and the edges among them. The filed nodes come
    /// from the index; the steps it leaves out are found by following
    /// children (each has a parent in its plan, which [`Self::check`]
    /// verifies), and the children read on the way are the edges.
    pub fn plan_subgraph(&self, plan: &PlanId) -> Result<(Vec<Node>, Vec<Edge>), LineageError> {
        let mut seen: HashSet<NodeId> = HashSet::new();
        let mut next: Vec<NodeId> = Vec::new();
        for id in self.nodes_of_plan(plan, None, None) {
            let id = id?;
            if seen.insert(id.clone()) {
                next.push(id);
            }
        }
        let mut nodes = Vec::with_capacity(next.len());
        let mut in_plan: HashSet<NodeId> = HashSet::with_capacity(next.len());
        let mut edges = Vec::new();
        while let Some(id) = next.pop() {
            let stored = self.require_stored(&id)?;
            if &stored.node.plan != plan {
                continue; // a child in another plan: not this plan's, nor what it leads to
            }
            let late = self.late_children(&id)?;
            for (kind, child) in stored.children.into_iter().chain(late) {
                edges.push(Edge::new(&id, &child, kind));
                if seen.insert(child.clone()) {
                    next.push(child);
                }
            }
            in_plan.insert(id);
            nodes.push(stored.node);
        }
        edges.retain(|edge| in_plan.contains(&edge.child));
        Ok((nodes, edges))
    }

    /// The newest version of a record: follows `supersedes` children.
    pub fn current_version(&self, id: &NodeId) -> Result<NodeId, LineageError> {
        let mut current = id.clone();
        let mut seen = HashSet::new();
        loop {
            if !seen.insert(current.clone()) {
                return Ok(current);
            }
            let newer = self
                .children(&current)?
                .into_iter()
                .filter(|(kind, _)| *kind == EdgeKind::Supersedes)
                .map(|(_, child)| child)
                .max();
            match newer {
                Some(next) => current = next,
                None => return Ok(current),
            }
        }
    }

    /// A record's trace as design section 3.1 writes it, reconstructed from
    /// the DAG: `parent_id` is the node it was derived from, and
    /// `processing_steps` lists every step from the plan down to the node,
    /// then every decision about it, oldest first.
    pub fn record_trace(&self, id: &NodeId) -> Result<Trace, LineageError> {
        let node = self.require(id)?;
        let parent_id = self
            .parents(id)?
            .into_iter()
            .find(|(kind, _)| matches!(kind, EdgeKind::DerivedFrom | EdgeKind::Supersedes))
            .map(|(_, parent)| parent.to_string());
        // Everything it came from, parents before children.
        let mut earlier: Vec<Node> = vec![node];
        for reached in self.ancestors(id, Walk::default())? {
            earlier.push(self.require(&reached.id)?);
        }
        earlier.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        let ids: HashSet<NodeId> = earlier.iter().map(|n| n.id.clone()).collect();
        let edges = self.edges_among(&ids)?;
        let mut by_id: HashMap<NodeId, Node> =
            earlier.into_iter().map(|n| (n.id.clone(), n)).collect();
        let graph_order =
            super::graph::PlanGraph::from_parts(by_id.values().cloned().collect(), &edges)
                .topological_order()?;
        let mut steps: Vec<Node> = graph_order.iter().filter_map(|i| by_id.remove(i)).collect();
        // Then every decision about it.
        let mut decisions = Vec::new();
        for (kind, child) in self.children(id)? {
            let child = self.require(&child)?;
            let decides = matches!(
                kind,
                EdgeKind::JudgedBy
                    | EdgeKind::ReviewedBy
                    | EdgeKind::AssignedTo
                    | EdgeKind::ExportedIn
            ) || child.kind == NodeKind::DedupDecision;
            if decides {
                decisions.push(child);
            }
        }
        decisions.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        steps.extend(decisions);
        let processing_steps = steps
            .into_iter()
            .map(|n| {
                let mut params = n.params.clone();
                params.insert("node_id".into(), n.id.to_string().into());
                params.insert("node_kind".into(), n.kind.as_str().into());
                ProcessingStep {
                    name: n.step.clone(),
                    timestamp: rfc3339_from_unix_ms(n.created_at_ms),
                    params,
                }
            })
            .collect();
        Ok(Trace {
            parent_id,
            processing_steps,
        })
    }

    /// Whether `target` is reachable from `from` along child edges, counting
    /// the batch's own pending edges too. Nodes new in this batch have no
    /// stored children, so only their pending edges are followed.
    fn reaches(
        &self,
        from: &NodeId,
        target: &NodeId,
        pending: &HashMap<NodeId, Vec<NodeId>>,
        new_nodes: &HashMap<NodeId, StoredNode>,
    ) -> Result<bool, LineageError> {
        let mut seen = HashSet::from([from.clone()]);
        let mut stack = vec![from.clone()];
        while let Some(id) = stack.pop() {
            if &id == target {
                return Ok(true);
            }
            let stored = if new_nodes.contains_key(&id) {
                Vec::new()
            } else {
                self.children(&id)?.into_iter().map(|(_, c)| c).collect()
            };
            let batch = pending.get(&id).into_iter().flatten().cloned();
            for next in stored.into_iter().chain(batch) {
                if seen.insert(next.clone()) {
                    stack.push(next);
                }
            }
        }
        Ok(false)
    }

    /// Appends a batch atomically and durably. Nodes already stored are kept
    /// as they are (ids are deterministic, so a resent result is a no-op); an
    /// edge to an unknown node or one that would close a cycle refuses the
    /// whole batch.
    pub fn append(&self, batch: &LineageBatch) -> Result<AppendOutcome, LineageError> {
        self.append_owned(batch.clone())
    }

    /// [`Self::append`] for a caller done with the batch: its nodes move
    /// into the store's values instead of being copied.
    pub fn append_owned(&self, batch: LineageBatch) -> Result<AppendOutcome, LineageError> {
        let outcome = self.apply_owned(batch)?;
        self.sync()?;
        Ok(outcome)
    }

    /// [`Self::append_owned`] without waiting for the batch to be durable:
    /// it is applied atomically, and readers see it, but it survives a
    /// crash only once a later [`Self::sync`] returns. A writer can apply
    /// the next batch while the last one syncs.
    pub fn apply_owned(&self, batch: LineageBatch) -> Result<AppendOutcome, LineageError> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut outcome = AppendOutcome::default();

        // Nodes new in this batch, gathering the edges they will carry.
        let mut new_nodes: HashMap<NodeId, StoredNode> = HashMap::new();
        // Which are stored already: independent reads, looked up in parallel.
        let stored_already: Vec<bool> = batch
            .nodes
            .par_iter()
            .map(|node| self.contains(&node.id))
            .collect::<Result<_, _>>()?;
        for (node, stored_already) in batch.nodes.into_iter().zip(stored_already) {
            if let Some(previous) = new_nodes.get(&node.id) {
                if previous.node != node {
                    return Err(LineageError::ConflictingNode {
                        id: node.id.to_string(),
                    });
                }
                continue;
            }
            if stored_already {
                outcome.nodes_existing += 1;
                continue;
            }
            let id = node.id.clone();
            let stored = StoredNode {
                node,
                parents: Vec::new(),
                children: Vec::new(),
            };
            new_nodes.insert(id, stored);
        }
        outcome.nodes_written = new_nodes.len();

        // Stored nodes this batch rewrites (a late parent, a new status),
        // each with the status its index entry is filed under.
        let mut touched: HashMap<NodeId, (NodeStatus, StoredNode)> = HashMap::new();
        // Stored endpoints already checked (the plan root is named by every record).
        let mut known_stored: HashSet<NodeId> = HashSet::new();
        let mut pending: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
        // Children added to a parent written earlier: one `C` key per parent.
        let mut late_children: HashMap<NodeId, Vec<(EdgeKind, NodeId)>> = HashMap::new();
        for edge in &batch.edges {
            let refuse_cycle = || LineageError::Cycle {
                parent: edge.parent.to_string(),
                child: edge.child.to_string(),
                kind: edge.kind.to_string(),
            };
            let dangling = |missing: &NodeId| LineageError::DanglingEdge {
                parent: edge.parent.to_string(),
                child: edge.child.to_string(),
                kind: edge.kind.to_string(),
                missing: missing.to_string(),
            };
            if edge.parent == edge.child {
                return Err(refuse_cycle());
            }
            let parent_is_new = new_nodes.contains_key(&edge.parent);
            if !parent_is_new
                && !touched.contains_key(&edge.parent)
                && !known_stored.contains(&edge.parent)
            {
                if !self.contains(&edge.parent)? {
                    return Err(dangling(&edge.parent));
                }
                known_stored.insert(edge.parent.clone());
            }
            let child_is_new = new_nodes.contains_key(&edge.child);
            if !child_is_new && !touched.contains_key(&edge.child) {
                let stored = self
                    .stored(&edge.child)?
                    .ok_or_else(|| dangling(&edge.child))?;
                touched.insert(edge.child.clone(), (stored.node.status, stored));
            }
            let child_parents = match new_nodes.get(&edge.child) {
                Some(stored) => &stored.parents,
                None => &touched[&edge.child].1.parents,
            };
            if child_parents.iter().any(|(_, p)| *p == edge.parent) {
                continue; // stored already, or twice in this batch: idempotent
            }
            if self.reaches(&edge.child, &edge.parent, &pending, &new_nodes)? {
                return Err(refuse_cycle());
            }
            pending
                .entry(edge.parent.clone())
                .or_default()
                .push(edge.child.clone());
            match new_nodes.get_mut(&edge.child) {
                Some(stored) => stored.parents.push((edge.kind, edge.parent.clone())),
                None => {
                    if let Some((_, stored)) = touched.get_mut(&edge.child) {
                        stored.parents.push((edge.kind, edge.parent.clone()));
                    }
                }
            }
            match new_nodes.get_mut(&edge.parent) {
                Some(stored) => stored.children.push((edge.kind, edge.child.clone())),
                None => late_children
                    .entry(edge.parent.clone())
                    .or_default()
                    .push((edge.kind, edge.child.clone())),
            }
            outcome.edges_written += 1;
        }

        for (id, status) in &batch.status_changes {
            if let Some(stored) = new_nodes.get_mut(id) {
                stored.node.status = *status;
                outcome.status_changes += 1;
                continue;
            }
            if !touched.contains_key(id) {
                let stored = self.require_stored(id)?;
                touched.insert(id.clone(), (stored.node.status, stored));
            }
            if let Some((_, stored)) = touched.get_mut(id)
                && stored.node.status != *status
            {
                stored.node.status = *status;
                outcome.status_changes += 1;
            }
        }

        let mut writes = sled::Batch::default();
        let mut put = |key: Vec<u8>, payload: &[u8]| {
            let value = codec::seal(&key, payload);
            writes.insert(key, value);
        };
        // New nodes have no index entry yet; touched ones are filed under
        // the status they were read with.
        let all = new_nodes.values().map(|stored| (None, stored));
        let all = all.chain(
            touched
                .values()
                .map(|(filed, stored)| (Some(*filed), stored)),
        );
        // Encoding the nodes is most of an append's own work, and each is
        // independent of the others: encoded in parallel, inserted in order.
        let all: Vec<(Option<NodeStatus>, &StoredNode)> = all.collect();
        let encoded: Vec<(Vec<u8>, Vec<u8>)> = all
            .par_iter()
            .map(|(_, stored)| {
                let key = keys::node(&stored.node.id);
                let payload = serde_json::to_vec(stored).map_err(other_io)?;
                let value = codec::seal(&key, &payload);
                Ok((key, value))
            })
            .collect::<Result<_, LineageError>>()?;
        let mut stale_index = Vec::new();
        for (filed_under, stored) in all {
            let node = &stored.node;
            if filed_under != Some(node.status) {
                if let Some(old) = filed_under {
                    stale_index.push(keys::index(&node.plan, node.kind, old, &node.id));
                }
                if keys::indexed(node.kind, &node.step) {
                    put(
                        keys::index(&node.plan, node.kind, node.status, &node.id),
                        &[],
                    );
                }
            }
        }
        if !late_children.is_empty() {
            // Unique for the life of the database, so a group never
            // overwrites an earlier one.
            let write = self.sled()?.db.generate_id().map_err(io)?;
            for (parent, children) in &late_children {
                put(
                    keys::child_group(parent, write),
                    &keys::child_group_value(children),
                );
            }
        }
        for (key, value) in encoded {
            writes.insert(key, value);
        }
        for key in stale_index {
            writes.remove(key);
        }
        self.tree()?.apply_batch(writes).map_err(io)?;
        // Freeing a large batch's values is not the caller's wait.
        rayon::spawn(move || drop((new_nodes, touched)));
        Ok(outcome)
    }

    /// Makes everything applied so far durable.
    pub fn sync(&self) -> Result<(), LineageError> {
        let sled = self.sled()?;
        sled.db.flush().map_err(io)?;
        sled.db_file.sync_all().map_err(other_io)
    }

    /// Every key and stored value, for dumps.
    pub(super) fn raw_entries(
        &self,
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), LineageError>> + '_ {
        self.entries(None)
            .map(|entry| entry.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(io))
    }

    /// The entries under `prefix` (all of them for `None`); a store that
    /// could not be opened again yields that error once.
    fn entries(
        &self,
        prefix: Option<Vec<u8>>,
    ) -> impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> + use<> {
        let (tree, closed) = match self.tree() {
            Ok(tree) => (Some(tree), None),
            Err(err) => (None, Some(err)),
        };
        let closed = closed.map(|err| Err(sled::Error::Io(std::io::Error::other(err.to_string()))));
        closed
            .into_iter()
            .chain(tree.into_iter().flat_map(move |tree| match &prefix {
                Some(prefix) => tree.scan_prefix(prefix),
                None => tree.iter(),
            }))
    }

    pub(super) fn is_empty(&self) -> Result<bool, LineageError> {
        Ok(self.tree()?.is_empty())
    }

    pub(super) fn key_count(&self) -> Result<usize, LineageError> {
        Ok(self.tree()?.len())
    }

    /// Writes raw entries (from a dump) after checking each envelope.
    /// Empties the store: an import that turned out invalid is undone.
    pub(super) fn clear(&self) -> Result<(), LineageError> {
        self.tree()?.clear().map_err(io)?;
        self.sync()
    }

    pub(super) fn import_raw(&self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), LineageError> {
        let mut writes = sled::Batch::default();
        for (key, value) in entries {
            codec::open(&key, &value)?;
            writes.insert(key, value);
        }
        self.tree()?.apply_batch(writes).map_err(io)?;
        self.sync()
    }

    /// Verifies every checksum, that every edge is known to both its ends
    /// and names stored nodes, that the index matches the nodes, and that the
    /// graph is acyclic.
    pub fn check(&self) -> Result<CheckReport, LineageError> {
        let mut report = CheckReport::default();
        // Each node's plan, kind, status and whether the index files it.
        let mut nodes: HashMap<NodeId, (PlanId, NodeKind, NodeStatus, bool)> = HashMap::new();
        // (parent, child) as each side records it.
        let mut child_side: HashSet<(NodeId, NodeId)> = HashSet::new();
        let mut parent_side: Vec<(NodeId, NodeId)> = Vec::new();
        let mut index_entries: HashSet<Vec<u8>> = HashSet::new();
        for entry in self.tree()?.iter() {
            let (key, value) = entry.map_err(io)?;
            let payload = match codec::open(&key, &value) {
                Ok(payload) => payload,
                Err(err) => {
                    report.problems.push(err.to_string());
                    continue;
                }
            };
            match key.first() {
                Some(&keys::NODE) => match decode_node(&key, payload) {
                    Ok(stored) => {
                        let id = stored.node.id.clone();
                        for (_, parent) in &stored.parents {
                            child_side.insert((parent.clone(), id.clone()));
                        }
                        for (_, child) in &stored.children {
                            parent_side.push((id.clone(), child.clone()));
                        }
                        let node = stored.node;
                        let filed = keys::indexed(node.kind, &node.step);
                        nodes.insert(id, (node.plan, node.kind, node.status, filed));
                    }
                    Err(err) => report.problems.push(err.to_string()),
                },
                Some(&keys::CHILD) => {
                    let sep = key.iter().position(|b| *b == 0);
                    let parent = sep.and_then(|sep| std::str::from_utf8(&key[1..sep]).ok());
                    match (parent, keys::late_children(&key, payload)) {
                        (Some(parent), Some(children)) => parent_side.extend(
                            children
                                .into_iter()
                                .map(|(_, child)| (NodeId::new(parent), child)),
                        ),
                        _ => report
                            .problems
                            .push(format!("malformed edge key {}", keys::printable(&key))),
                    }
                }
                Some(&keys::INDEX) => {
                    index_entries.insert(key.to_vec());
                }
                _ => report
                    .problems
                    .push(format!("unknown key {}", keys::printable(&key))),
            }
        }
        report.nodes = nodes.len();
        report.edges = child_side.len();
        report.index_entries = index_entries.len();
        for (parent, child) in &child_side {
            if !nodes.contains_key(parent) {
                report
                    .problems
                    .push(format!("node {child} names missing parent {parent}"));
            }
        }
        let mut unmatched = child_side.clone();
        for (parent, child) in &parent_side {
            if !nodes.contains_key(child) {
                report
                    .problems
                    .push(format!("node {parent} names missing child {child}"));
            } else if !unmatched.remove(&(parent.clone(), child.clone())) {
                report.problems.push(format!(
                    "edge {parent} -> {child} is recorded by the parent but not by the child"
                ));
            }
        }
        for (parent, child) in unmatched {
            report.problems.push(format!(
                "edge {parent} -> {child} is recorded by the child but not by the parent"
            ));
        }
        // What the index leaves out, a plan's listing reaches from a parent.
        let below_a_parent: HashSet<&NodeId> = child_side
            .iter()
            .filter(|(parent, child)| {
                matches!((nodes.get(parent), nodes.get(child)),
                    (Some(p), Some(c)) if p.0 == c.0)
            })
            .map(|(_, child)| child)
            .collect();
        for (id, (plan, kind, status, indexed)) in &nodes {
            let filed = index_entries.remove(&keys::index(plan, *kind, *status, id));
            if *indexed {
                if !filed {
                    report
                        .problems
                        .push(format!("node {id} is missing from the index"));
                }
            } else if !below_a_parent.contains(id) {
                report.problems.push(format!(
                    "node {id} ({kind}) has no parent in its plan and no index entry: listing the plan misses it"
                ));
            }
        }
        for stale in index_entries {
            report.problems.push(format!(
                "index entry {} names no node",
                keys::printable(&stale)
            ));
        }
        let edges: Vec<(NodeId, NodeId)> = child_side.into_iter().collect();
        if let Some(cycle_at) = super::graph::find_cycle(nodes.keys().cloned(), &edges) {
            report
                .problems
                .push(format!("the graph has a cycle through {cycle_at}"));
        }
        Ok(report)
    }

    /// The edges among a set of nodes (for analysis), from the children's side.
    pub(super) fn edges_among(&self, ids: &HashSet<NodeId>) -> Result<Vec<Edge>, LineageError> {
        let mut edges = Vec::new();
        for id in ids {
            for (kind, parent) in self.parents(id)? {
                if ids.contains(&parent) {
                    edges.push(Edge::new(&parent, id, kind));
                }
            }
        }
        Ok(edges)
    }
}

impl Drop for LineageStore {
    fn drop(&mut self) {
        let _ = self.sync();
        let _ = std::fs::remove_file(self.dir.join(OWNER_FILE));
    }
}

fn decode_node(key: &[u8], payload: &[u8]) -> Result<StoredNode, LineageError> {
    serde_json::from_slice(payload).map_err(|e| LineageError::Corrupt {
        key: keys::printable(key),
        reason: format!("undecodable node: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lineage::synthetic::{plan_roots, record};

    /// Stores written before the index left an attempt's steps out filed
    /// every node: they still check clean and list each node once, and a
    /// status change drops such an entry instead of leaving it stale.
    #[test]
    fn a_store_that_filed_every_node_still_checks_and_lists_each_node_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = LineageStore::open(dir.path().join("store")).unwrap();
        let plan = PlanId::new("p-old");
        store.append(&plan_roots(&plan)).unwrap();
        let batch = record(&plan, 0);
        store.append(&batch).unwrap();
        let mut writes = sled::Batch::default();
        for node in &batch.nodes {
            let stored = store.require(&node.id).unwrap();
            let key = keys::index(&plan, stored.kind, stored.status, &stored.id);
            writes.insert(key.clone(), codec::seal(&key, &[]));
        }
        store.tree().unwrap().apply_batch(writes).unwrap();
        let report = store.check().unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
        assert_eq!(report.index_entries, 2 + 6);
        assert_eq!(store.plan_nodes(&plan).unwrap().len(), 2 + 6);

        let input = batch
            .nodes
            .iter()
            .find(|n| n.kind == NodeKind::GeneratedInput)
            .unwrap();
        store
            .append(&LineageBatch {
                status_changes: vec![(input.id.clone(), NodeStatus::Rejected)],
                ..Default::default()
            })
            .unwrap();
        let report = store.check().unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
        assert_eq!(report.index_entries, 2 + 5);
        assert_eq!(store.plan_nodes(&plan).unwrap().len(), 2 + 6);
    }

    fn node(plan: &PlanId, name: &str, kind: NodeKind) -> Node {
        Node {
            id: NodeId::derive(plan, &[name]),
            plan: plan.clone(),
            kind,
            status: NodeStatus::Recorded,
            created_at_ms: 1,
            step: "test".into(),
            params: serde_json::Map::new(),
            body: serde_json::json!({ "name": name }),
        }
    }

    fn id(plan: &PlanId, name: &str) -> NodeId {
        NodeId::derive(plan, &[name])
    }

    fn edge(plan: &PlanId, parent: &str, child: &str) -> Edge {
        Edge::new(&id(plan, parent), &id(plan, child), EdgeKind::DerivedFrom)
    }

    /// A store holding `a -> b` (both responses, so filed in the index).
    fn stored_pair() -> (tempfile::TempDir, LineageStore, PlanId) {
        let dir = tempfile::tempdir().unwrap();
        let store = LineageStore::open(dir.path().join("store")).unwrap();
        let plan = PlanId::new("p-apply");
        store
            .append(&LineageBatch {
                nodes: vec![
                    node(&plan, "a", NodeKind::Response),
                    node(&plan, "b", NodeKind::Response),
                ],
                edges: vec![edge(&plan, "a", "b")],
                status_changes: Vec::new(),
            })
            .unwrap();
        (dir, store, plan)
    }

    /// Every way a batch applies to a store holding `a -> b`: what it
    /// counts, or why it is refused whole.
    #[test]
    fn batch_application_table() {
        type Expect = Result<AppendOutcome, &'static str>;
        type Case = (&'static str, fn(&PlanId) -> LineageBatch, Expect);
        let counts = |nodes_written, nodes_existing, edges_written, status_changes| {
            Ok(AppendOutcome {
                nodes_written,
                nodes_existing,
                edges_written,
                status_changes,
            })
        };
        let cases: Vec<Case> = vec![
            (
                "a new child of a stored node",
                |p| LineageBatch {
                    nodes: vec![node(p, "c", NodeKind::Response)],
                    edges: vec![edge(p, "b", "c")],
                    ..Default::default()
                },
                counts(1, 0, 1, 0),
            ),
            (
                "a stored node resent: first write wins",
                |p| LineageBatch {
                    nodes: vec![node(p, "a", NodeKind::Response)],
                    edges: vec![edge(p, "a", "b")],
                    ..Default::default()
                },
                counts(0, 1, 0, 0),
            ),
            (
                "one node twice in the batch, the same",
                |p| LineageBatch {
                    nodes: vec![
                        node(p, "c", NodeKind::Response),
                        node(p, "c", NodeKind::Response),
                    ],
                    edges: vec![edge(p, "a", "c"), edge(p, "a", "c")],
                    ..Default::default()
                },
                counts(1, 0, 1, 0),
            ),
            (
                "one node twice in the batch, different",
                |p| {
                    let mut other = node(p, "c", NodeKind::Response);
                    other.body = serde_json::json!({ "name": "not c" });
                    LineageBatch {
                        nodes: vec![node(p, "c", NodeKind::Response), other],
                        ..Default::default()
                    }
                },
                Err("ConflictingNode"),
            ),
            (
                "an edge from a node to itself",
                |p| LineageBatch {
                    edges: vec![edge(p, "a", "a")],
                    ..Default::default()
                },
                Err("Cycle"),
            ),
            (
                "an edge closing a cycle through stored nodes",
                |p| LineageBatch {
                    nodes: vec![node(p, "c", NodeKind::Response)],
                    edges: vec![edge(p, "b", "c"), edge(p, "c", "a")],
                    ..Default::default()
                },
                Err("Cycle"),
            ),
            (
                "an edge from a node nobody stored",
                |p| LineageBatch {
                    edges: vec![edge(p, "ghost", "b")],
                    ..Default::default()
                },
                Err("DanglingEdge"),
            ),
            (
                "an edge to a node nobody stored",
                |p| LineageBatch {
                    edges: vec![edge(p, "a", "ghost")],
                    ..Default::default()
                },
                Err("DanglingEdge"),
            ),
            (
                "a stored node's new status, and one it has already",
                |p| LineageBatch {
                    status_changes: vec![
                        (id(p, "b"), NodeStatus::Accepted),
                        (id(p, "a"), NodeStatus::Recorded),
                    ],
                    ..Default::default()
                },
                counts(0, 0, 0, 1),
            ),
            (
                "the status of a node written in the same batch",
                |p| LineageBatch {
                    nodes: vec![node(p, "c", NodeKind::Response)],
                    edges: vec![edge(p, "a", "c")],
                    status_changes: vec![(id(p, "c"), NodeStatus::Rejected)],
                },
                counts(1, 0, 1, 1),
            ),
            (
                "the status of a node nobody stored",
                |p| LineageBatch {
                    status_changes: vec![(id(p, "ghost"), NodeStatus::Accepted)],
                    ..Default::default()
                },
                Err("NodeNotFound"),
            ),
        ];
        for (case, batch, expect) in cases {
            let (_dir, store, plan) = stored_pair();
            let before: Vec<_> = store.raw_entries().collect::<Result<_, _>>().unwrap();
            let got = store.apply_owned(batch(&plan));
            match (&got, expect) {
                (Ok(outcome), Ok(expected)) => assert_eq!(*outcome, expected, "{case}"),
                (Err(err), Err(variant)) => {
                    assert!(format!("{err:?}").starts_with(variant), "{case}: {err:?}");
                    // Refused whole: not one key changed.
                    let after: Vec<_> = store.raw_entries().collect::<Result<_, _>>().unwrap();
                    assert_eq!(after, before, "{case}");
                }
                (got, expected) => panic!("{case}: got {got:?}, expected {expected:?}"),
            }
            let report = store.check().unwrap();
            assert!(report.is_ok(), "{case}: {:?}", report.problems);
        }
    }

    /// What an applied batch leaves readable: late children beside the
    /// embedded ones, and index entries that follow a status change.
    #[test]
    fn an_applied_batch_reads_back_through_edges_and_the_index() {
        let (_dir, store, plan) = stored_pair();
        store
            .apply_owned(LineageBatch {
                nodes: vec![node(&plan, "c", NodeKind::Response)],
                edges: vec![edge(&plan, "a", "c")],
                status_changes: vec![(id(&plan, "b"), NodeStatus::Accepted)],
            })
            .unwrap();
        let mut children: Vec<NodeId> = store
            .children(&id(&plan, "a"))
            .unwrap()
            .into_iter()
            .map(|(_, child)| child)
            .collect();
        children.sort();
        let mut expected = vec![id(&plan, "b"), id(&plan, "c")];
        expected.sort();
        assert_eq!(children, expected);
        assert_eq!(
            store.parents(&id(&plan, "c")).unwrap(),
            [(EdgeKind::DerivedFrom, id(&plan, "a"))]
        );
        let filed = |status| {
            store
                .nodes_of_plan(&plan, Some(NodeKind::Response), Some(status))
                .collect::<Result<Vec<_>, _>>()
                .unwrap()
        };
        assert_eq!(filed(NodeStatus::Accepted), [id(&plan, "b")]);
        let mut recorded = filed(NodeStatus::Recorded);
        recorded.sort();
        let mut expected = vec![id(&plan, "a"), id(&plan, "c")];
        expected.sort();
        assert_eq!(recorded, expected);
        assert_eq!(
            store.require(&id(&plan, "b")).unwrap().status,
            NodeStatus::Accepted
        );
    }
}
