'use strict';

// Starts tcbridge's Python development peer (tcbridge_devpeer) for the Node
// Gateway tests, and stops it by its PID.

const {spawn} = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const ROOT = path.join(__dirname, '..', '..');
const PYTHON = path.join(ROOT, '.venv', 'bin', 'python');
const START_TIMEOUT_MS = 30000;

function available() {
    return fs.existsSync(PYTHON);
}

async function startDevPeer() {
    const folder = fs.mkdtempSync(path.join(os.tmpdir(), 'tcbridge-devpeer-'));
    const log = fs.openSync(path.join(folder, 'peer.log'), 'a');
    const child = spawn(PYTHON, ['-m', 'tcbridge_devpeer', '--folder', folder, '--port', '0'],
        {cwd: ROOT, stdio: ['ignore', log, log]});
    fs.closeSync(log);
    const infoPath = path.join(folder, 'connection.json');
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (!fs.existsSync(infoPath)) {
        if (child.exitCode !== null || Date.now() > deadline) {
            child.kill('SIGKILL');
            throw new Error(`the development peer did not start: ${fs.readFileSync(path.join(folder, 'peer.log'), 'utf8')}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const info = JSON.parse(fs.readFileSync(infoPath, 'utf8'));
    return {
        info,
        folder,
        async stop() {
            if (child.exitCode !== null) {
                return;
            }
            const exited = new Promise((resolve) => child.once('exit', resolve));
            process.kill(child.pid, 'SIGTERM');
            await exited;
            fs.rmSync(folder, {recursive: true, force: true});
        },
    };
}

module.exports = {available, startDevPeer};
