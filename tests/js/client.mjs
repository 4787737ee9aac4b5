// An independent MCP client (the official TypeScript SDK) for tests/test_mcp_js.py.
// node client.mjs stdio <command> [args...]   |   node client.mjs http <url> <token>
// Drives one session and prints what it saw as one JSON object on stdout.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [kind, target, ...rest] = process.argv.slice(2);
const transport =
  kind === "stdio"
    ? new StdioClientTransport({ command: target, args: rest, env: process.env, stderr: "inherit" })
    : new StreamableHTTPClientTransport(new URL(target), {
        requestInit: { headers: { Authorization: `Bearer ${rest[0]}` } },
      });

const client = new Client({ name: "glasshouse-js-test", version: "1.0.0" });
await client.connect(transport);
const out = {};
out.protocolVersion = transport.protocolVersion ?? null;
out.server = client.getServerVersion();
out.tools = (await client.listTools()).tools.map((t) => ({
  name: t.name,
  hasOutputSchema: Boolean(t.outputSchema),
}));
const call = (name, args) => client.callTool({ name, arguments: args });
out.first = await call("run_python", { code: "x = 41" });
out.second = await call("run_python", { code: "print(x + 1)" });
out.write = await call("write_file", { path: "js.txt", content: "from node" });
out.cat = await call("run_command", { command: ["cat", "js.txt"] });
out.badPath = await call("read_file", { path: "../outside" });
const rid = out.second.structuredContent.receipt_id;
out.receipt = (await client.readResource({ uri: `glasshouse://receipts/${rid}` })).contents[0];
await client.close();
process.stdout.write(JSON.stringify(out) + "\n");
