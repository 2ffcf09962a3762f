resource "oci_core_vcn" "gateway" {
  compartment_id = var.compartment_ocid
  display_name   = "realtime-gateway"
  cidr_blocks    = ["10.0.0.0/16"]
  dns_label      = "gateway"
}

resource "oci_core_internet_gateway" "gateway" {
  compartment_id = var.compartment_ocid
  vcn_id         = oci_core_vcn.gateway.id
  display_name   = "realtime-gateway"
}

resource "oci_core_route_table" "public" {
  compartment_id = var.compartment_ocid
  vcn_id         = oci_core_vcn.gateway.id
  display_name   = "realtime-gateway-public"
  route_rules {
    destination       = "0.0.0.0/0"
    destination_type  = "CIDR_BLOCK"
    network_entity_id = oci_core_internet_gateway.gateway.id
  }
}

# The subnets' security list only lets traffic out: every inbound rule is in
# the network security groups below, attached per VNIC. (The VCN's default
# security list, which admits SSH from anywhere, is attached to no subnet.)
resource "oci_core_security_list" "egress_only" {
  compartment_id = var.compartment_ocid
  vcn_id         = oci_core_vcn.gateway.id
  display_name   = "realtime-gateway-egress-only"
  egress_security_rules {
    destination = "0.0.0.0/0"
    protocol    = "all"
  }
}

resource "oci_core_subnet" "load_balancer" {
  compartment_id    = var.compartment_ocid
  vcn_id            = oci_core_vcn.gateway.id
  display_name      = "realtime-gateway-load-balancer"
  cidr_block        = "10.0.0.0/24"
  dns_label         = "lb"
  route_table_id    = oci_core_route_table.public.id
  security_list_ids = [oci_core_security_list.egress_only.id]
}

# Nodes have public addresses for SSH from admin_cidr and for outbound
# traffic (the Nix binary cache, the apps' APIs); nothing else reaches them
# from outside.
resource "oci_core_subnet" "nodes" {
  compartment_id    = var.compartment_ocid
  vcn_id            = oci_core_vcn.gateway.id
  display_name      = "realtime-gateway-nodes"
  cidr_block        = local.inventory.subnet
  dns_label         = "nodes"
  route_table_id    = oci_core_route_table.public.id
  security_list_ids = [oci_core_security_list.egress_only.id]
}

resource "oci_core_network_security_group" "load_balancer" {
  compartment_id = var.compartment_ocid
  vcn_id         = oci_core_vcn.gateway.id
  display_name   = "realtime-gateway-load-balancer"
}

resource "oci_core_network_security_group" "nodes" {
  compartment_id = var.compartment_ocid
  vcn_id         = oci_core_vcn.gateway.id
  display_name   = "realtime-gateway-nodes"
}

resource "oci_core_network_security_group" "postgres" {
  compartment_id = var.compartment_ocid
  vcn_id         = oci_core_vcn.gateway.id
  display_name   = "realtime-gateway-postgres"
}

# Clients → load balancer: HTTPS only.
resource "oci_core_network_security_group_security_rule" "https_from_anywhere" {
  network_security_group_id = oci_core_network_security_group.load_balancer.id
  direction                 = "INGRESS"
  protocol                  = "6"
  source_type               = "CIDR_BLOCK"
  source                    = "0.0.0.0/0"
  tcp_options {
    destination_port_range {
      min = 443
      max = 443
    }
  }
}

resource "oci_core_network_security_group_security_rule" "load_balancer_to_nodes" {
  network_security_group_id = oci_core_network_security_group.load_balancer.id
  direction                 = "EGRESS"
  protocol                  = "6"
  destination_type          = "NETWORK_SECURITY_GROUP"
  destination               = oci_core_network_security_group.nodes.id
  tcp_options {
    destination_port_range {
      min = local.inventory.httpPort
      max = local.inventory.httpPort
    }
  }
}

# Load balancer → nodes: the HTTP and WebSocket port (and its health check).
resource "oci_core_network_security_group_security_rule" "http_from_load_balancer" {
  network_security_group_id = oci_core_network_security_group.nodes.id
  direction                 = "INGRESS"
  protocol                  = "6"
  source_type               = "NETWORK_SECURITY_GROUP"
  source                    = oci_core_network_security_group.load_balancer.id
  tcp_options {
    destination_port_range {
      min = local.inventory.httpPort
      max = local.inventory.httpPort
    }
  }
}

# Node ↔ node: the cluster port, from the other nodes only.
resource "oci_core_network_security_group_security_rule" "cluster_between_nodes" {
  network_security_group_id = oci_core_network_security_group.nodes.id
  direction                 = "INGRESS"
  protocol                  = "6"
  source_type               = "NETWORK_SECURITY_GROUP"
  source                    = oci_core_network_security_group.nodes.id
  tcp_options {
    destination_port_range {
      min = local.inventory.clusterPort
      max = local.inventory.clusterPort
    }
  }
}

resource "oci_core_network_security_group_security_rule" "ssh_from_admin" {
  network_security_group_id = oci_core_network_security_group.nodes.id
  direction                 = "INGRESS"
  protocol                  = "6"
  source_type               = "CIDR_BLOCK"
  source                    = var.admin_cidr
  tcp_options {
    destination_port_range {
      min = 22
      max = 22
    }
  }
}

# Path MTU discovery ("fragmentation needed") so that large frames do not stall.
resource "oci_core_network_security_group_security_rule" "path_mtu" {
  network_security_group_id = oci_core_network_security_group.nodes.id
  direction                 = "INGRESS"
  protocol                  = "1"
  source_type               = "CIDR_BLOCK"
  source                    = "0.0.0.0/0"
  icmp_options {
    type = 3
    code = 4
  }
}

resource "oci_core_network_security_group_security_rule" "nodes_egress" {
  network_security_group_id = oci_core_network_security_group.nodes.id
  direction                 = "EGRESS"
  protocol                  = "all"
  destination_type          = "CIDR_BLOCK"
  destination               = "0.0.0.0/0"
}

# PostgreSQL: from the nodes only.
resource "oci_core_network_security_group_security_rule" "postgres_from_nodes" {
  network_security_group_id = oci_core_network_security_group.postgres.id
  direction                 = "INGRESS"
  protocol                  = "6"
  source_type               = "NETWORK_SECURITY_GROUP"
  source                    = oci_core_network_security_group.nodes.id
  tcp_options {
    destination_port_range {
      min = local.inventory.postgres.port
      max = local.inventory.postgres.port
    }
  }
}
