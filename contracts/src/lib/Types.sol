// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title Types shared by the network's five contracts.
/// @notice The numeric values are part of the protocol (PROTOCOL.md): off-chain code mirrors them in
/// cluster/chain/contracts.py, so they must never be reordered.

/// @dev A node's status. Busy, PendingPause and PendingQuit all hold exactly one task.
enum NodeStatus {
    Quit, // 0: not in the network (never joined, quit, slashed or kicked out)
    Available, // 1: can be selected
    Busy, // 2: runs one task
    PendingPause, // 3: runs one task, pauses when it ends
    PendingQuit, // 4: runs one task, quits (stake refunded) when it ends
    Paused // 5: in the network, never selected
}

/// @dev What a task asks the nodes to run.
enum TaskType {
    SD, // 0: Stable Diffusion images, results compared by perceptual-hash distance
    GPT // 1: text generation, results compared byte for byte
}

/// @dev A node as Node.nodeInfo shows it (stored packed, with its places in the selection lists).
struct NodeInfo {
    NodeStatus status;
    uint32 gpuVramGB;
    uint64 taskId; // the task the node holds, 0 when it holds none
    uint128 stake; // what the node paid to join: refunded on quit / kick-out, sent to the treasury on slash
    bytes32 cardModelKey; // keccak256(abi.encode(gpuName, gpuVramGB, runtime))
    string gpuName;
    string runtime;
}
