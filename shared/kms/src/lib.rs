//! KMS and CMS for Nitro key release (in progress).
