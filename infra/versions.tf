terraform {
  # OpenTofu 1.6+ or Terraform 1.5+.
  required_version = ">= 1.5"
  required_providers {
    oci = {
      source  = "oracle/oci"
      version = ">= 6.0"
    }
  }
}

# Credentials come from the OCI CLI's config file (`oci setup config`).
provider "oci" {
  region              = var.region
  config_file_profile = var.oci_profile
}
