/**
 * A throwaway CA and a certificate for 127.0.0.1 signed by it, made with
 * `openssl` in a directory the caller owns: `ca.pem`, `cert.pem` and
 * `key.pem`.  For tests and benchmarks; nothing here is a secret.
 *
 * @module
 */

/** Writes `ca.pem`, `cert.pem` and `key.pem` (P-256, one day) into `dir`. */
export async function makeCertificates(dir: string): Promise<void> {
  const openssl = async (...args: string[]) => {
    const out = await new Deno.Command("openssl", {
      args,
      cwd: dir,
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!out.success) {
      throw new Error(
        `Cannot make a certificate: openssl ${args[0]} failed: ${
          new TextDecoder().decode(out.stderr)
        }`,
      );
    }
  };
  const ec = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
  ];
  await openssl(
    "req",
    "-x509",
    ...ec,
    "-days",
    "1",
    "-subj",
    "/CN=sai test CA",
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
  );
  await openssl(
    "req",
    ...ec,
    "-subj",
    "/CN=127.0.0.1",
    "-keyout",
    "key.pem",
    "-out",
    "cert.csr",
  );
  await Deno.writeTextFile(
    `${dir}/ext`,
    "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
  );
  await openssl(
    "x509",
    "-req",
    "-in",
    "cert.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-days",
    "1",
    "-extfile",
    "ext",
    "-out",
    "cert.pem",
  );
}
