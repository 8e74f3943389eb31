//! `cluster status`: the nodes alive, leases held, orders in flight, the shared order budget left
//! and each node's propagation lag, read from the store.
