resource "oci_load_balancer_load_balancer" "gateway" {
  compartment_id             = var.compartment_ocid
  display_name               = "realtime-gateway"
  shape                      = "flexible"
  subnet_ids                 = [oci_core_subnet.load_balancer.id]
  is_private                 = false
  network_security_group_ids = [oci_core_network_security_group.load_balancer.id]

  # The Always Free load balancer: 10 Mbps, fixed.
  shape_details {
    minimum_bandwidth_in_mbps = 10
    maximum_bandwidth_in_mbps = 10
  }
}

# The certificate's name follows its content, so that a renewed certificate is
# a new one the listener switches to before the old one goes.
resource "oci_load_balancer_certificate" "gateway" {
  load_balancer_id   = oci_load_balancer_load_balancer.gateway.id
  certificate_name   = "gateway-${substr(sha256(file(var.tls_certificate_path)), 0, 12)}"
  public_certificate = file(var.tls_certificate_path)
  private_key        = file(var.tls_private_key_path)

  lifecycle {
    create_before_destroy = true
  }
}

resource "oci_load_balancer_backend_set" "gateway" {
  load_balancer_id = oci_load_balancer_load_balancer.gateway.id
  name             = "gateway-nodes"
  # WebSockets are long-lived: new ones go to the node holding the fewest.
  policy = "LEAST_CONNECTIONS"

  # Ready means: configuration and schemas loaded, joined the cluster, not
  # draining. A draining node answers 503 and gets no new connections.
  health_checker {
    protocol          = "HTTP"
    port              = local.inventory.httpPort
    url_path          = "/health/ready"
    return_code       = 200
    interval_ms       = 5000
    timeout_in_millis = 3000
    retries           = 2
  }
}

resource "oci_load_balancer_backend" "node" {
  for_each = local.nodes

  load_balancer_id = oci_load_balancer_load_balancer.gateway.id
  backendset_name  = oci_load_balancer_backend_set.gateway.name
  ip_address       = oci_core_instance.node[each.key].private_ip
  port             = local.inventory.httpPort
}

# TLS ends here; the HTTP listener passes WebSocket upgrades through and
# appends the client's address to X-Forwarded-For (the nodes run with
# TRUST_PROXY=true).
resource "oci_load_balancer_listener" "https" {
  load_balancer_id         = oci_load_balancer_load_balancer.gateway.id
  name                     = "https"
  default_backend_set_name = oci_load_balancer_backend_set.gateway.name
  port                     = 443
  protocol                 = "HTTP"

  ssl_configuration {
    certificate_name        = oci_load_balancer_certificate.gateway.certificate_name
    protocols               = ["TLSv1.2", "TLSv1.3"]
    verify_peer_certificate = false
  }

  connection_configuration {
    idle_timeout_in_seconds = local.listener_idle_timeout_seconds
  }
}
