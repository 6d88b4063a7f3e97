# The guest's host.toml is examples/host.toml with exactly these edits (sed -f), so the suite proves the example
# a user starts from. Names become example.test (they resolve to the guest itself); the first admin is created;
# every source points at the offline stand-ins the guest serves on 127.0.0.1 (see README.md). @REPO_FPR@ is the
# test repository key's fingerprint, filled in by the harness.
s/example\.com/example.test/g
s|^# admin_user = .*|admin_user = "admin"|
s|^# matrix_repo_url = .*|matrix_repo_url = "http://127.0.0.1:8099/matrix/debian/"|
s|^# matrix_keyring_url = .*|matrix_keyring_url = "http://127.0.0.1:8099/matrix/debian/matrix-org-archive-keyring.gpg"|
s|^# matrix_key_fingerprint = .*|matrix_key_fingerprint = "@REPO_FPR@"|
s|^# acme_directory_url = .*|acme_directory_url = "https://localhost:14000/dir"|
s|^# acme_ca_bundle = .*|acme_ca_bundle = "/srv/fixtures/pebble/ca.pem"|
s|^# element_releases_url = .*|element_releases_url = "http://127.0.0.1:8099/releases"|
s|^# element_signing_key = .*|element_signing_key = "/srv/fixtures/element-test-key.gpg"|
