locals {
  # The same file the NixOS configurations are made from (flake.nix).
  inventory = jsondecode(file("${path.module}/inventory.json"))
  nodes     = { for node in local.inventory.nodes : node.name => node }

  # Each node: 1 Arm core and 6 GB. Four of them are exactly the Always Free
  # tier's 4 A1 OCPUs, 24 GB and, with 50 GB boot volumes (OCI's minimum),
  # its 200 GB of block storage; which is why PostgreSQL shares node-1 instead
  # of having a fifth machine (docs/deploy.md).
  node_ocpus           = 1
  node_memory_gbs      = 6
  node_boot_volume_gbs = 50

  always_free_a1_ocpus      = 4
  always_free_a1_memory_gbs = 24
  always_free_block_gbs     = 200

  within_always_free = (
    length(local.nodes) * local.node_ocpus <= local.always_free_a1_ocpus &&
    length(local.nodes) * local.node_memory_gbs <= local.always_free_a1_memory_gbs &&
    length(local.nodes) * local.node_boot_volume_gbs <= local.always_free_block_gbs
  )

  # The Phoenix client sends a heartbeat every 30 s and the gateway closes a
  # connection silent for 60 s: the load balancer must never be the one that
  # cuts an idle WebSocket.
  listener_idle_timeout_seconds = 300
}

data "oci_identity_availability_domains" "all" {
  compartment_id = var.compartment_ocid
}

# Any recent Arm Linux image does: nixos-anywhere replaces it with the node's
# NixOS configuration on first install.
data "oci_core_images" "installer" {
  compartment_id           = var.compartment_ocid
  operating_system         = "Canonical Ubuntu"
  operating_system_version = "24.04"
  shape                    = "VM.Standard.A1.Flex"
  sort_by                  = "TIMECREATED"
  sort_order               = "DESC"
}
