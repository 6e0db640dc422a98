"""Audio on the board: WAV/microphone input (:mod:`.wav`) and the one log-mel front end (:mod:`.frontend`)."""
