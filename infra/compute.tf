resource "oci_core_instance" "node" {
  for_each = local.nodes

  compartment_id      = var.compartment_ocid
  availability_domain = data.oci_identity_availability_domains.all.availability_domains[var.availability_domain_number - 1].name
  display_name        = each.key
  shape               = "VM.Standard.A1.Flex"

  shape_config {
    ocpus         = local.node_ocpus
    memory_in_gbs = local.node_memory_gbs
  }

  source_details {
    source_type             = "image"
    source_id               = data.oci_core_images.installer.images[0].id
    boot_volume_size_in_gbs = local.node_boot_volume_gbs
  }

  create_vnic_details {
    subnet_id        = oci_core_subnet.nodes.id
    private_ip       = each.value.privateIp
    hostname_label   = each.key
    assign_public_ip = true
    nsg_ids = concat(
      [oci_core_network_security_group.nodes.id],
      each.key == local.inventory.postgres.node ? [oci_core_network_security_group.postgres.id] : []
    )
  }

  metadata = {
    ssh_authorized_keys = join("\n", local.inventory.sshAuthorizedKeys)
  }

  lifecycle {
    # nixos-anywhere replaces the installer image; a newer image or changed
    # keys must not recreate a running node (keys are managed by NixOS).
    ignore_changes = [source_details[0].source_id, metadata]

    precondition {
      condition     = local.within_always_free || var.allow_beyond_always_free
      error_message = "infra/inventory.json has more nodes than the Always Free tier holds (4 A1 OCPUs, 24 GB, 200 GB of block storage); set allow_beyond_always_free = true to pay for the rest."
    }
    precondition {
      condition     = length(local.inventory.sshAuthorizedKeys) > 0
      error_message = "infra/inventory.json: add your SSH public key to sshAuthorizedKeys."
    }
  }
}
