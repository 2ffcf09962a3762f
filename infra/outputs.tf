output "load_balancer_ip" {
  description = "Point your domain's A record here; clients connect to wss://<domain>/socket."
  value       = oci_load_balancer_load_balancer.gateway.ip_address_details[0].ip_address
}

output "node_public_ips" {
  description = "SSH (from admin_cidr) and nixos-anywhere targets, by node name."
  value       = { for name, node in oci_core_instance.node : name => node.public_ip }
}

output "node_private_ips" {
  description = "Cluster and PostgreSQL addresses, by node name (as in inventory.json)."
  value       = { for name, node in oci_core_instance.node : name => node.private_ip }
}

output "postgres_address" {
  description = "host:port of PostgreSQL for DATABASE_URL."
  value       = "${local.nodes[local.inventory.postgres.node].privateIp}:${local.inventory.postgres.port}"
}

output "load_balancer_id" {
  description = "For `oci lb backend-health get` (scripts/deploy/cluster.sh waits on it)."
  value       = oci_load_balancer_load_balancer.gateway.id
}
