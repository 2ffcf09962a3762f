variable "region" {
  description = "OCI region, your account's home region (Always Free A1 capacity lives there), e.g. eu-frankfurt-1."
  type        = string
}

variable "oci_profile" {
  description = "Profile of ~/.oci/config that holds the API key."
  type        = string
  default     = "DEFAULT"
}

variable "compartment_ocid" {
  description = "Compartment for every resource (the tenancy's OCID is its root compartment)."
  type        = string
}

variable "availability_domain_number" {
  description = "1, 2 or 3: the availability domain of the nodes; pick another when A1 capacity is out in one."
  type        = number
  default     = 1
}

variable "admin_cidr" {
  description = "The only addresses allowed to SSH to the nodes, e.g. your office's 203.0.113.7/32."
  type        = string
  validation {
    condition     = can(cidrhost(var.admin_cidr, 0)) && var.admin_cidr != "0.0.0.0/0"
    error_message = "admin_cidr is a CIDR such as 203.0.113.7/32, and not the whole Internet."
  }
}

variable "tls_certificate_path" {
  description = "PEM certificate (with its intermediate chain) for the load balancer's HTTPS listener."
  type        = string
}

variable "tls_private_key_path" {
  description = "PEM private key of tls_certificate_path."
  type        = string
  sensitive   = true
}

variable "allow_beyond_always_free" {
  description = "Allow more nodes, cores, memory or disk than the Always Free tier gives (they are billed)."
  type        = bool
  default     = false
}
