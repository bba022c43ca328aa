//! A Galera cluster on loopback: N `mariadbd` nodes with the wsrep provider,
//! rsync SST, node 1 bootstrapping the cluster.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Result, TestBedError};
use crate::server::{new_root_dir, pick_port, stop_all, MariaDb, READY_TIMEOUT};
use crate::template::template_datadir;

const PROVIDER: &str = "/usr/lib/galera/libgalera_smm.so";

/// N Galera nodes (db1..dbN). Dropping it stops them and removes their files.
#[derive(Debug)]
pub struct GaleraCluster {
    root: PathBuf,
    nodes: Vec<MariaDb>,
    startup: Duration,
}

struct NodePorts {
    sql: u16,
    gcomm: u16,
    ist: u16,
    sst: u16,
}

impl GaleraCluster {
    /// Starts an `n`-node cluster and waits until every node is synced and
    /// reports the full cluster size.
    pub fn start(n: usize) -> Result<GaleraCluster> {
        if !Path::new(PROVIDER).exists() {
            return Err(TestBedError::Setup(format!(
                "{PROVIDER} not found (is galera-4 installed?)"
            )));
        }
        let started = Instant::now();
        let root = new_root_dir("galera-")?;
        let mut cluster = GaleraCluster {
            root,
            nodes: Vec::with_capacity(n),
            startup: Duration::ZERO,
        };
        let template = template_datadir()?;
        let ports = (0..n)
            .map(|_| {
                Ok(NodePorts {
                    sql: pick_port()?,
                    gcomm: pick_port()?,
                    ist: pick_port()?,
                    sst: pick_port()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let members = ports
            .iter()
            .map(|p| format!("127.0.0.1:{}", p.gcomm))
            .collect::<Vec<_>>()
            .join(",");
        // Unique per cluster, so clusters of parallel tests never merge; gcomm
        // rejects group names longer than 32 bytes.
        let cluster_name = format!("rtb-{}-{}", std::process::id(), ports[0].gcomm);

        for (i, p) in ports.iter().enumerate() {
            let id = i as u32 + 1;
            let name = format!("db{id}");
            let args = vec![
                "--wsrep-on=ON".to_string(),
                format!("--wsrep-provider={PROVIDER}"),
                format!("--wsrep-cluster-name={cluster_name}"),
                format!("--wsrep-cluster-address=gcomm://{members}"),
                format!("--wsrep-node-name={name}"),
                "--wsrep-node-address=127.0.0.1".to_string(),
                format!(
                    "--wsrep-provider-options=base_port={g};gmcast.listen_addr=tcp://127.0.0.1:{g};ist.recv_addr=127.0.0.1:{i}",
                    g = p.gcomm,
                    i = p.ist
                ),
                "--wsrep-sst-method=rsync".to_string(),
                format!("--wsrep-sst-receive-address=127.0.0.1:{}", p.sst),
                "--binlog-format=ROW".to_string(),
                "--innodb-autoinc-lock-mode=2".to_string(),
                "--default-storage-engine=InnoDB".to_string(),
            ];
            let mut node =
                MariaDb::new(name, cluster.root.join(format!("db{id}")), id, p.sql, args);
            if i == 0 {
                node = node.with_first_start_args(vec!["--wsrep-new-cluster".to_string()]);
            }
            node.prepare_dir(&template)?;
            node.launch()?;
            cluster.nodes.push(node);
            // Joiners need a synced member to receive their copy (SST) from.
            if i == 0 {
                cluster.nodes[0].wait_ready(READY_TIMEOUT)?;
                wait_synced(&cluster.nodes[0], 1, READY_TIMEOUT)?;
            }
        }
        // Joiners start together; a donor busy with one joiner makes the next
        // one retry, which galera does on its own.
        for node in &cluster.nodes[1..] {
            node.wait_ready(READY_TIMEOUT)?;
        }
        for node in &cluster.nodes {
            wait_synced(node, n, READY_TIMEOUT)?;
        }
        cluster.startup = started.elapsed();
        tracing::info!(nodes = n, elapsed = ?cluster.startup, "galera cluster up");
        Ok(cluster)
    }

    pub fn nodes(&self) -> &[MariaDb] {
        &self.nodes
    }

    pub fn node(&self, name: &str) -> Option<&MariaDb> {
        self.nodes.iter().find(|s| s.name == name)
    }

    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    pub fn startup_duration(&self) -> Duration {
        self.startup
    }
}

impl std::ops::Index<usize> for GaleraCluster {
    type Output = MariaDb;
    fn index(&self, i: usize) -> &MariaDb {
        &self.nodes[i]
    }
}

impl Drop for GaleraCluster {
    fn drop(&mut self) {
        stop_all(&self.nodes);
        if let Err(e) = fs::remove_dir_all(&self.root) {
            tracing::warn!(dir = %self.root.display(), error = %e, "removing galera directory");
        }
    }
}

/// Waits until `node` is Synced and sees at least `size` members.
fn wait_synced(node: &MariaDb, size: usize, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match node.sql(
            "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS \
             WHERE VARIABLE_NAME IN ('wsrep_local_state_comment', 'wsrep_cluster_size') \
             ORDER BY VARIABLE_NAME",
        ) {
            Ok(out) => {
                // Rows in name order: wsrep_cluster_size, wsrep_local_state_comment.
                let rows: Vec<&str> = out.lines().collect();
                if let [cluster_size, state] = rows.as_slice() {
                    if *state == "Synced" && cluster_size.parse::<usize>().unwrap_or(0) >= size {
                        return Ok(());
                    }
                }
                out.replace('\n', " ")
            }
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(TestBedError::NotReady {
                name: node.name.clone(),
                reason: format!("not synced in a cluster of {size} within {timeout:?}: {last}"),
                log: node.error_log.clone(),
                tail: node.error_log_tail(25),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
