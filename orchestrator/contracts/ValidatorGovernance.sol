// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title Validator set and admin governance of a proof-of-authority consortium.
/// @notice Pre-deployed in genesis. AuRa clients (OpenEthereum, Nethermind) call the
/// ValidatorSet interface: `getValidators()`, `finalizeChange()` and the `InitiateChange`
/// event; Besu's QBFT validator-contract mode reads `getValidators()` alone.
///
/// One contract, not a validator set plus a separate admin contract: every admin rule
/// (only an admin's own validators, the cap set by the first admin, an admin's validators
/// leaving with it) changes the validator list in the same step, so one contract keeps them
/// consistent without cross-contract authorisation, and genesis needs one account.
///
/// Storage layout is part of the interface: the orchestrator writes the initial state of the
/// "code + storage" genesis form slot by slot (orchestrator/src/contracts.rs). Add new state
/// only after `proposals`, and recommit the storage layout with the bytecode.
contract ValidatorGovernance {
    /// Caller of `finalizeChange` in AuRa (the engine's system transactions).
    address public constant SYSTEM_ADDRESS = 0xffffFFFfFFffffffffffffffFfFFFfffFFFfFFfE;

    // slot 0. In the order they were voted in; `admins[0]` is the "first admin" whose
    // validator count caps everyone else's.
    address[] private admins;
    // slot 1. 1-based position in `admins`; 0 for a non-admin.
    mapping(address => uint256) private adminPosition;
    // slot 2. Each admin's validators, in the order it added them.
    mapping(address => address[]) private validatorsOf;
    // slot 3. Which admin runs a validator; the zero address for none.
    mapping(address => address) private adminOf;
    // slot 4. The set the consensus engine uses: what `getValidators` returns.
    address[] private currentValidators;
    // slot 5. True for AuRa: a change takes effect when the engine calls `finalizeChange`.
    // False for QBFT, whose validator-contract mode never calls it: a change takes effect
    // at once.
    bool private awaitFinalize;
    // slot 6. The set announced by the last `InitiateChange`, while `changePending`.
    address[] private pendingValidators;
    // slot 7. An `InitiateChange` awaits `finalizeChange`. The ValidatorSet contract allows
    // one change in flight, so set changes revert while this is true.
    bool public changePending;
    // slot 8. Open admin votes; an executed proposal is removed.
    Proposal[] private proposals;

    struct Proposal {
        address subject;
        bool add;
        address[] voters;
    }

    /// ValidatorSet interface: the engine applies `_newSet` once this block is final.
    event InitiateChange(bytes32 indexed _parentHash, address[] _newSet);
    event ChangeFinalized(address[] currentSet);
    event AdminVoted(address indexed voter, address indexed subject, bool add, uint256 votes);
    event AdminAdded(address indexed admin);
    event AdminRemoved(address indexed admin);
    event ValidatorAdded(address indexed admin, address indexed validator);
    event ValidatorRemoved(address indexed admin, address indexed validator);

    modifier onlyAdmin() {
        require(adminPosition[msg.sender] != 0, "not an admin");
        _;
    }

    /// Constructor form of the genesis account (AuRa chainspec `constructor`): the first
    /// admin and its validators. Other members' admins are voted in afterwards.
    constructor(address firstAdmin, address[] memory firstValidators, bool awaitFinalize_) {
        require(firstAdmin != address(0), "zero admin");
        require(firstValidators.length > 0, "no validators");
        admins.push(firstAdmin);
        adminPosition[firstAdmin] = 1;
        for (uint256 i = 0; i < firstValidators.length; i++) {
            address v = firstValidators[i];
            require(v != address(0), "zero validator");
            require(adminOf[v] == address(0), "duplicate validator");
            adminOf[v] = firstAdmin;
            validatorsOf[firstAdmin].push(v);
            currentValidators.push(v);
        }
        awaitFinalize = awaitFinalize_;
    }

    // ---- ValidatorSet interface ----

    function getValidators() external view returns (address[] memory) {
        return currentValidators;
    }

    function finalizeChange() external {
        require(msg.sender == SYSTEM_ADDRESS, "only the system");
        require(changePending, "no change pending");
        currentValidators = pendingValidators;
        delete pendingValidators;
        changePending = false;
        emit ChangeFinalized(currentValidators);
    }

    // ---- Validators: each admin manages its own ----

    function addValidator(address validator) external onlyAdmin {
        require(validator != address(0), "zero validator");
        require(adminOf[validator] == address(0), "already a validator");
        address[] storage mine = validatorsOf[msg.sender];
        if (msg.sender != admins[0]) {
            require(mine.length < validatorsOf[admins[0]].length, "over the first admin's count");
        }
        adminOf[validator] = msg.sender;
        mine.push(validator);
        emit ValidatorAdded(msg.sender, validator);
        changeSet();
    }

    function removeValidator(address validator) external onlyAdmin {
        require(adminOf[validator] == msg.sender, "not your validator");
        removeAddress(validatorsOf[msg.sender], validator);
        delete adminOf[validator];
        emit ValidatorRemoved(msg.sender, validator);
        changeSet();
    }

    // ---- Admins: voted in and out by strict majority ----

    function voteAddAdmin(address candidate) external onlyAdmin {
        require(candidate != address(0), "zero admin");
        require(adminPosition[candidate] == 0, "already an admin");
        if (vote(candidate, true)) {
            admins.push(candidate);
            adminPosition[candidate] = admins.length;
            emit AdminAdded(candidate);
        }
    }

    function voteRemoveAdmin(address admin) external onlyAdmin {
        require(adminPosition[admin] != 0, "not an admin");
        require(admins.length > 1, "last admin");
        if (vote(admin, false)) {
            // Order-preserving, so the longest-serving remaining admin becomes the first.
            removeAddress(admins, admin);
            delete adminPosition[admin];
            for (uint256 i = 0; i < admins.length; i++) {
                adminPosition[admins[i]] = i + 1;
            }
            dropVoter(admin);
            emit AdminRemoved(admin);
            address[] storage gone = validatorsOf[admin];
            if (gone.length > 0) {
                for (uint256 i = 0; i < gone.length; i++) {
                    delete adminOf[gone[i]];
                    emit ValidatorRemoved(admin, gone[i]);
                }
                delete validatorsOf[admin];
                changeSet();
            }
        }
    }

    // ---- Views ----

    function getAdmins() external view returns (address[] memory) {
        return admins;
    }

    function isAdmin(address who) external view returns (bool) {
        return adminPosition[who] != 0;
    }

    function getValidatorsOf(address admin) external view returns (address[] memory) {
        return validatorsOf[admin];
    }

    function getAdminOf(address validator) external view returns (address) {
        return adminOf[validator];
    }

    /// Open proposals as parallel arrays: subject, add (true) or remove, votes cast.
    function getProposals()
        external
        view
        returns (address[] memory subjects, bool[] memory adds, uint256[] memory votes)
    {
        subjects = new address[](proposals.length);
        adds = new bool[](proposals.length);
        votes = new uint256[](proposals.length);
        for (uint256 i = 0; i < proposals.length; i++) {
            subjects[i] = proposals[i].subject;
            adds[i] = proposals[i].add;
            votes[i] = proposals[i].voters.length;
        }
    }

    function getVoters(address subject, bool add) external view returns (address[] memory) {
        (bool found, uint256 i) = findProposal(subject, add);
        if (!found) {
            return new address[](0);
        }
        return proposals[i].voters;
    }

    // ---- Internals ----

    /// Records the caller's vote; true (and the proposal closed) once it has a strict
    /// majority of the current admins.
    function vote(address subject, bool add) private returns (bool) {
        (bool found, uint256 i) = findProposal(subject, add);
        if (!found) {
            proposals.push();
            i = proposals.length - 1;
            proposals[i].subject = subject;
            proposals[i].add = add;
        }
        address[] storage voters = proposals[i].voters;
        for (uint256 j = 0; j < voters.length; j++) {
            require(voters[j] != msg.sender, "already voted");
        }
        voters.push(msg.sender);
        uint256 votes = voters.length;
        emit AdminVoted(msg.sender, subject, add, votes);
        if (votes * 2 > admins.length) {
            removeProposal(i);
            return true;
        }
        return false;
    }

    function findProposal(address subject, bool add) private view returns (bool, uint256) {
        for (uint256 i = 0; i < proposals.length; i++) {
            if (proposals[i].subject == subject && proposals[i].add == add) {
                return (true, i);
            }
        }
        return (false, 0);
    }

    function removeProposal(uint256 i) private {
        uint256 last = proposals.length - 1;
        if (i != last) {
            proposals[i] = proposals[last];
        }
        proposals.pop();
    }

    /// A removed admin's votes stop counting; proposals left without votes close, and so
    /// do proposals about the removed admin.
    function dropVoter(address admin) private {
        uint256 i = proposals.length;
        while (i > 0) {
            i--;
            address[] storage voters = proposals[i].voters;
            for (uint256 j = 0; j < voters.length; j++) {
                if (voters[j] == admin) {
                    voters[j] = voters[voters.length - 1];
                    voters.pop();
                    break;
                }
            }
            if (voters.length == 0 || proposals[i].subject == admin) {
                removeProposal(i);
            }
        }
    }

    /// Recomputes the set (admins in order, each admin's validators in order) and announces
    /// it: at once for QBFT, through `InitiateChange` and `finalizeChange` for AuRa.
    function changeSet() private {
        require(!changePending, "a change is pending");
        uint256 total = 0;
        for (uint256 i = 0; i < admins.length; i++) {
            total += validatorsOf[admins[i]].length;
        }
        require(total > 0, "the set would be empty");
        address[] memory next = new address[](total);
        uint256 k = 0;
        for (uint256 i = 0; i < admins.length; i++) {
            address[] storage own = validatorsOf[admins[i]];
            for (uint256 j = 0; j < own.length; j++) {
                next[k++] = own[j];
            }
        }
        emit InitiateChange(blockhash(block.number - 1), next);
        if (awaitFinalize) {
            pendingValidators = next;
            changePending = true;
        } else {
            currentValidators = next;
            emit ChangeFinalized(next);
        }
    }

    /// Removes `who` from `list`, keeping the order of the rest.
    function removeAddress(address[] storage list, address who) private {
        uint256 n = list.length;
        for (uint256 i = 0; i < n; i++) {
            if (list[i] == who) {
                for (uint256 j = i; j + 1 < n; j++) {
                    list[j] = list[j + 1];
                }
                list.pop();
                return;
            }
        }
    }
}
