//! Messaging between nodes: bootstrap from seeds, membership, heartbeats and
//! failure detection, reconnects, the wire codec, the node agent.
//!
//! Built on ractor_cluster, which gives the transport and the cookie
//! handshake but no failure detector and no reconnect: both live here.

mod view;

pub use self::view::{ClusterSnapshot, ClusterView, Member, PeerState};
