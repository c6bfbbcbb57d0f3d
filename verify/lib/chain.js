// The chain, read through a JSON-RPC endpoint with ethers: only view calls, receipts and logs, never a transaction.
import { ethers } from "ethers";

import { NetworkError } from "./http.js";

// The protocol's constants, kept here rather than read from the site: the verifier trusts the chain and the
// contracts' published interfaces, not the server's description of them.
export const KIND_CODES = { generic: 0, snapshot: 1, model_version: 2, inference_batch: 3, receipt_batch: 4, reward_epoch: 5 };

export const REGISTRY_ABI = [
  "function verify(bytes32 root, bytes32 leaf, bytes32[] proof) view returns (bool)",
  "function rootInfo(bytes32 root) view returns (uint8 kind, bytes32 subjectId, uint64 blockNumber, address submitter)",
  "event Anchored(uint8 indexed kind, bytes32 indexed subjectId, bytes32 indexed root, string uri, address submitter)",
];

export const DISTRIBUTOR_ABI = [
  "function token() view returns (address)",
  "function epochInfo(uint256 epoch) view returns (bytes32 root, uint256 total, uint256 claimed, uint64 publishedAt)",
  "function isClaimed(uint256 epoch, uint256 index) view returns (bool)",
  "event EpochPublished(uint256 indexed epoch, bytes32 indexed root, uint256 total)",
  "event Claimed(uint256 indexed epoch, uint256 index, address indexed account, uint256 amount)",
];

const registryInterface = new ethers.Interface(REGISTRY_ABI);
const distributorInterface = new ethers.Interface(DISTRIBUTOR_ABI);

/** Run an RPC call; an unreachable or failing endpoint becomes a NetworkError (exit 2), a revert stays an error. */
export async function rpc(what, call) {
  try {
    return await call();
  } catch (e) {
    if (ethers.isError(e, "CALL_EXCEPTION") || ethers.isError(e, "BAD_DATA")) throw e;
    throw new NetworkError(`${what}: ${e.shortMessage ?? e.message}`);
  }
}

export class Chain {
  constructor(provider, chainId) {
    this.provider = provider;
    this.chainId = chainId;
    this._receipts = new Map();
  }

  static async connect(url) {
    // the chain id by a plain request first: a provider left to detect the network retries forever in the background
    const answer = await rpc(`eth_chainId at ${url}`, async () => {
      const response = await fetch(url, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "eth_chainId", params: [] }),
        signal: AbortSignal.timeout(60_000),
      });
      return response.json();
    });
    if (!answer?.result) throw new NetworkError(`eth_chainId at ${url}: ${JSON.stringify(answer?.error ?? answer)}`);
    const chainId = Number(BigInt(answer.result));
    const request = new ethers.FetchRequest(url);
    request.timeout = 60_000;
    const provider = new ethers.JsonRpcProvider(request, chainId, {
      staticNetwork: ethers.Network.from(chainId),
      batchMaxCount: 1,
    });
    return new Chain(provider, chainId);
  }

  code(address) {
    return rpc(`eth_getCode ${address}`, () => this.provider.getCode(address));
  }

  latestBlock() {
    return rpc("eth_blockNumber", () => this.provider.getBlockNumber());
  }

  receipt(txHash) {
    if (!this._receipts.has(txHash)) {
      this._receipts.set(txHash, rpc(`receipt of ${txHash}`, () => this.provider.getTransactionReceipt(txHash)));
    }
    return this._receipts.get(txHash);
  }

  registry(address) {
    return new ethers.Contract(address, REGISTRY_ABI, this.provider);
  }

  distributor(address) {
    return new ethers.Contract(address, DISTRIBUTOR_ABI, this.provider);
  }

  rootInfo(address, root) {
    return rpc(`rootInfo(${root})`, () => this.registry(address).rootInfo(root));
  }

  verifyLeaf(address, root, leaf, proof) {
    return rpc(`verify(${root})`, () => this.registry(address).verify(root, leaf, proof));
  }

  epochInfo(address, epoch) {
    return rpc(`epochInfo(${epoch})`, () => this.distributor(address).epochInfo(epoch));
  }

  /** The token the distributor at `address` created in its constructor (and alone mints). */
  tokenOf(address) {
    return rpc(`token() of ${address}`, () => this.distributor(address).token());
  }

  isClaimed(address, epoch, index) {
    return rpc(`isClaimed(${epoch}, ${index})`, () => this.distributor(address).isClaimed(epoch, index));
  }
}

/** The `name` events that `address` emitted in `receipt`, decoded. */
export function eventsIn(receipt, address, name) {
  const iface = name === "Anchored" ? registryInterface : distributorInterface;
  return receipt.logs
    .filter((log) => log.address.toLowerCase() === address.toLowerCase())
    .map((log) => {
      try {
        return iface.parseLog(log);
      } catch {
        return null;
      }
    })
    .filter((parsed) => parsed && parsed.name === name);
}
