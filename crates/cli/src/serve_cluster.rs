//! `perpcore serve --cluster …`: the gateway as a producer of the cluster's stream, on an
//! engine node of its own (docs/CLUSTER.md, "The gateway on the stream"). Flattened into
//! the `serve` subcommand; without `--cluster` the gateway runs single-node.

use perpcore_cluster::StreamNames;
use perpcore_gateway::ClusterOptions;

#[derive(clap::Args, Debug, Clone)]
pub struct ClusterArgs {
    /// NATS servers, comma-separated: run on the cluster's stream instead of the
    /// single-node sequencer (--journal is then this gateway's node directory).
    #[arg(long)]
    pub cluster: Option<String>,
    /// The JetStream stream.
    #[arg(long, default_value = "PERPCORE", requires = "cluster")]
    pub stream: String,
    /// The id of the gateway's engine node (unique among the stream's nodes).
    #[arg(long, requires = "cluster")]
    pub node_id: Option<String>,
    /// Stream replicas, if the stream has to be created.
    #[arg(long, default_value_t = 3, requires = "cluster")]
    pub replicas: usize,
    /// This gateway's order id slot: its order ids are SLOT modulo --order-id-slots.
    /// Every gateway on one stream needs its own.
    #[arg(long, default_value_t = 0, requires = "cluster")]
    pub order_id_slot: u64,
    /// How many gateways' slots the order ids are divided into.
    #[arg(long, default_value_t = 1, requires = "cluster")]
    pub order_id_slots: u64,
}

impl ClusterArgs {
    /// `None` without `--cluster`.
    pub fn options(&self) -> anyhow::Result<Option<ClusterOptions>> {
        let Some(servers) = &self.cluster else {
            return Ok(None);
        };
        let servers = perpcore_cluster::stream::parse_servers(servers)
            .map_err(|e| anyhow::anyhow!("--cluster: {e}"))?;
        let node_id = self
            .node_id
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("--cluster needs --node-id"))?;
        let mut c = ClusterOptions::new(servers, StreamNames::new(&self.stream)?, node_id);
        c.replicas = self.replicas;
        c.order_id_slot = self.order_id_slot;
        c.order_id_slots = self.order_id_slots;
        Ok(Some(c))
    }
}
