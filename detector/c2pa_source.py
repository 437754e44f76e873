"""C2PA evidence: is there a manifest, does it validate, did we sign it, which generation."""

from __future__ import annotations

from pathlib import Path

from provenance.credentials import read_credentials

from .evidence import Evidence, VerificationContext, claim


class C2paSource:
    """Reads the embedded manifest offline and checks it against our trust anchors and signers."""

    name = "c2pa"

    def inspect(self, path: Path, context: VerificationContext) -> Evidence:
        """Evidence from the file's C2PA manifest (absent after any remux or re-encode).

        A manifest we signed names its generation; the ledger must still say that generation was
        released: a complete signed clip left behind by a killed publish is `unreleased`.
        """
        creds = read_credentials(path, trust_pem=context.trust_pem, our_signers=context.our_signers)
        details = creds.to_evidence()
        details.pop("source")
        if not creds.present:
            return Evidence(self.name, None, "absent", 0.0, details)
        if creds.state == "Invalid":
            # A manifest that fails validation was altered or damaged: never trust its claims.
            return Evidence(self.name, None, "tampered", 0.0, details)
        if creds.ours and creds.generation_id:
            return claim(self.name, creds.generation_id, 1.0, details, context)
        return Evidence(self.name, None, "foreign", 0.0, details)
